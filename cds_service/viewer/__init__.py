"""The ECG viewer: the page every card links to, and the reviewers' list.

Pages (served by :mod:`cds_service.api.viewer`, everything local: no CDN, no web font):

- ``/viewer/ecg/{id}``: the 12-lead ECG on standard paper (25 mm/s, 10 mm/mV, 1/5 mm grid;
  3x4 + lead II rhythm strip, or 12 stacked leads), drawn as SVG on the server by
  :mod:`~cds_service.viewer.svg`; the findings with calibrated probabilities and the label
  text scored; measurements; quality notes; model version and model card; feedback buttons.
- ``/viewer/``: recent ECGs for reviewers, filtered by finding, probability, date received
  and whether feedback exists.

Access (no open URL ever shows PHI):

- Card links (:func:`viewer_link`): ``/viewer/ecg/{id}?token=...`` where the token is an
  HMAC-SHA256 over the ECG id (and the card uuid and service id, when given) and an expiry
  (``link_ttl_s``, default 15 min), keyed by ``link_secret`` or a secret generated once into
  ``data_dir`` (0600). A token opens only its ECG; expired or edited links get a 403 page
  that names nothing. ``ecg-cds viewer-link ID`` prints one.
- SMART (:mod:`~cds_service.viewer.smart`): with ``smart_client_id`` set, cards also carry a
  ``smart`` link to ``/viewer/launch`` (EHR launch with PKCE; ``appContext`` = ECG id; the
  ECG must belong to the launch's patient). :func:`~cds_service.viewer.smart.card_links`
  returns both link variants for a card.
- Reviewers: sign in at ``/viewer/login`` with an audit token (``auth.audit_tokens``), or open
  ``ecg-cds viewer-link --reviewer``; either sets an HttpOnly, ``SameSite=Strict`` cookie
  (path ``/viewer``) holding a signed ``list`` token valid 8 h.
- Feedback posts must carry the page's ECG token in the form body (CSRF-safe: the cookie
  alone records nothing) and are stored with ``source="viewer"`` like CDS Hooks feedback
  (the reason Coding from the cards' ``overrideReasons``, the comment apart). Feedback
  through a card link is recorded on that card; from the list, on a per-(ECG, model
  version) viewer card (service id ``ecg-viewer``) that records what the page showed.

Every page view, refusal and feedback is written to the audit trail.
"""

from cds_service.viewer.links import (
    reviewer_link,
    verify_link_token,
    verify_list_token,
    viewer_link,
)

__all__ = ["reviewer_link", "verify_link_token", "verify_list_token", "viewer_link"]
