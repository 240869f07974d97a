"""The ECG viewer: the page every card links to, and the reviewers' list.

:mod:`~cds_service.viewer.links` signs the links, :mod:`~cds_service.viewer.svg` draws the
tracing on standard paper, and :mod:`cds_service.api.viewer` serves the pages.
"""

from cds_service.viewer.links import (
    reviewer_link,
    verify_link_token,
    verify_list_token,
    viewer_link,
)

__all__ = ["reviewer_link", "verify_link_token", "verify_list_token", "viewer_link"]
