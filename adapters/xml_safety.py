"""Safe XML parsing for every XML-based ECG format (HL7 aECG, GE MUSE, Philips).

ECG files arrive from outside (uploads, EHR attachments), so the parser must never
expand entities (billion laughs, external entities), fetch a DTD or anything else over
the network, or build an unbounded tree. Every failure becomes an
:class:`~adapters.errors.EcgFormatError` that names the input and, for syntax errors, the line.
"""

from __future__ import annotations

import codecs
import re

from lxml import etree

from adapters.errors import EcgFormatError

#: How much of the file the format sniffers look at: the root element of every supported
#: format sits after at most a few comment lines.
SNIFF_BYTES = 8192

# "<!ENTITY" in the encodings XML files use in practice (UTF-8/ASCII/Latin-1 and UTF-16).
_ENTITY_MARKERS = (
    b"<!ENTITY",
    "<!ENTITY".encode("utf-16-le"),
    "<!ENTITY".encode("utf-16-be"),
)


#: At most this many "<" (tags, comments, declarations) in one document. Real ECG exports
#: hold a few thousand; lxml spends about 120 bytes per element, so a 64 MB file of empty
#: elements ("<a/>" 16 million times) would otherwise build a 2 GB tree before any check.
MAX_XML_MARKUP = 1_000_000


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not thread-safe, and readers run in
    # web workers as well as Celery workers.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse_xml(data: bytes, name: str, max_bytes: int) -> etree._Element:
    """Parse untrusted XML bytes into an element tree, refusing anything unsafe.

    ``name`` is the input's display name for error messages; ``max_bytes`` bounds the
    input size. Documents that declare entities are rejected outright: no ECG format
    needs them, and they are how entity-expansion attacks are built.
    """
    if len(data) > max_bytes:
        raise EcgFormatError(
            name,
            f"XML input is {len(data)} bytes, over the {max_bytes}-byte limit",
            "raise max_bytes if this file is genuine",
        )
    if not data.strip():
        raise EcgFormatError(name, "empty input, not an XML document")
    if any(marker in data for marker in _ENTITY_MARKERS):
        raise EcgFormatError(
            name,
            "the XML declares entities (DOCTYPE with <!ENTITY>), which is refused for safety",
            "export the ECG without a DTD internal subset",
        )
    markup = data.count(b"<")  # an upper bound on the elements, counted in one fast pass
    if markup > MAX_XML_MARKUP:
        raise EcgFormatError(
            name,
            f"the XML holds {markup} markup characters '<', over the limit of {MAX_XML_MARKUP}",
            "an ECG export has a few thousand elements; this is not one",
        )
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        if exc.msg.startswith("Unsupported encoding"):
            return _parse_transcoded(data, name, max_bytes)
        raise _syntax_error(exc, data, name) from None
    except (ValueError, LookupError) as exc:  # e.g. an unknown encoding declaration
        raise EcgFormatError(name, f"XML cannot be decoded ({exc})") from None
    if root is None:
        raise EcgFormatError(name, "the XML document has no root element")
    tree = root.getroottree()
    dtd = tree.docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        # Defence in depth: the byte scan above misses exotic encodings.
        raise EcgFormatError(
            name, "the XML declares entities (DOCTYPE with <!ENTITY>), which is refused for safety"
        )
    return root


_DECLARED_ENCODING = re.compile(
    r"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']"""
)


def _syntax_error(exc: etree.XMLSyntaxError, data: bytes, name: str) -> EcgFormatError:
    """libxml2's syntax error as the reader's error, saying the cause where libxml2's
    message does not (an encoding that does not fit the bytes is no truncated file)."""
    line = exc.lineno if exc.lineno is not None else "?"
    declared = _DECLARED_ENCODING.match(xml_head(data, 512))
    if declared and "16" in declared.group(1) and b"\x00" not in data[:64]:
        # A UTF-16 file converted to UTF-8 (or Latin-1) with its declaration left as it
        # was: XML 1.0 (4.3.3) makes that a fatal error, and libxml2's message for it
        # ("Blank needed here") says nothing of the cause.
        return EcgFormatError(
            name,
            f"the XML declares encoding {declared.group(1)!r} but its bytes are not UTF-16",
            "the file was converted without its declaration; correct the declaration",
        )
    if exc.msg.startswith("Invalid bytes in character encoding"):
        said = f"its declared {declared.group(1)}" if declared else "UTF-8 (no declaration)"
        return EcgFormatError(
            name,
            f"the XML's bytes at line {line} are not valid in {said}",
            'declare the encoding the file is written in, e.g. encoding="ISO-8859-1"',
        )
    return EcgFormatError(
        name, f"not well-formed XML (line {line}: {exc.msg})", "the file is truncated or corrupt"
    )


def _parse_transcoded(data: bytes, name: str, max_bytes: int) -> etree._Element:
    """A document whose declared encoding libxml2 does not know by that name but Python
    does (``latin-1``, ``utf_8``: what Python's ElementTree writes when a script re-exports
    a file), re-encoded as UTF-8 and parsed with every check above run again on it."""
    declared = _DECLARED_ENCODING.match(xml_head(data, 512))
    encoding = declared.group(1) if declared else "?"
    try:
        codec = codecs.lookup(encoding).name
        text = data.decode(codec)
    except (LookupError, UnicodeDecodeError):
        raise EcgFormatError(
            name,
            f"the XML declares encoding {encoding!r}, which is unknown or does not fit its bytes",
            "export the file as UTF-8 (or ISO-8859-1, UTF-16)",
        ) from None
    text = text.lstrip("\ufeff")
    end = text.find("?>") + 2
    if end < 2:
        raise EcgFormatError(name, "not well-formed XML (the XML declaration is not closed)")
    declaration = text[:end].replace(encoding, "UTF-8", 1)
    return parse_xml((declaration + text[end:]).encode("utf-8"), name, max_bytes)


def xml_head(data: bytes, limit: int = SNIFF_BYTES) -> str:
    """The first ``limit`` bytes decoded well enough to look for a root element name.

    Honours a UTF-16 byte-order mark (Philips PageWriter files are UTF-16); everything
    else is read as Latin-1, which never fails and keeps ASCII tag names intact.
    """
    head = data[:limit]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return head.decode("utf-16", errors="ignore")
    if len(head) >= 4 and head[0] == ord("<") and head[1] == 0:
        return head.decode("utf-16-le", errors="ignore")
    if len(head) >= 4 and head[0] == 0 and head[1] == ord("<"):
        return head.decode("utf-16-be", errors="ignore")
    return head.decode("latin-1")


#: What may stand before the root element, each with what ends it.
_PROLOG_PARTS = (("<!--", "-->"), ("<?", "?>"), ("<!DOCTYPE", ">"))


def _without_prolog(head: str) -> str:
    """``head`` from its first element on: the XML declaration, comments, processing
    instructions and DOCTYPE before it left out (nothing, where one of them is not closed).

    One pass with ``str.find``: a regular expression for the same parts (``<!--.*?-->``...)
    was tried again from every ``<!--`` and ``<?`` of a head full of unclosed ones, 0.24 s per
    8 KB head and reader.
    """
    kept: list[str] = []
    at = 0
    while (start := head.find("<", at)) >= 0:
        kept.append(head[at:start])
        for opener, closer in _PROLOG_PARTS:
            if head.startswith(opener, start):
                end = head.find(closer, start + len(opener))
                if end < 0:
                    return "".join(kept)
                at = end + len(closer)
                break
        else:  # an element: the root
            return "".join(kept) + head[start:]
    return "".join(kept) + head[at:]


def root_element_is(data: bytes, local_name: str, namespace: str | None = None) -> bool:
    """Whether the document's first element is ``local_name`` (optionally in ``namespace``).

    Cheap content sniffing for :func:`adapters.loader.load_ecg`: looks only at the head of
    the file, skipping the XML declaration, comments and DOCTYPE.
    """
    body = _without_prolog(xml_head(data))
    match = re.search(r"<\s*(?:([\w.-]+):)?([\w.-]+)([^>]*)", body)
    if match is None or match.group(2) != local_name:
        return False
    if namespace is None:
        return True
    prefix = match.group(1)
    declarations = dict(
        re.findall(r"xmlns(?::([\w.-]+))?\s*=\s*[\"']([^\"']*)[\"']", match.group(3))
    )
    return declarations.get(prefix or "") == namespace


def local_name(element: etree._Element) -> str:
    """An element's tag without its namespace."""
    return etree.QName(element).localname
