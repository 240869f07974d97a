"""One module per ``ecg-cds`` subcommand."""
