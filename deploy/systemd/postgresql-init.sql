-- Run once as the postgres superuser on the database host:  sudo -u postgres psql -f postgresql-init.sql
-- The service creates and migrates its tables itself at start (alembic, under an advisory lock).
CREATE ROLE ecg_cds LOGIN;            -- then: \password ecg_cds  (or peer auth over the unix socket)
CREATE DATABASE ecg_cds OWNER ecg_cds;
