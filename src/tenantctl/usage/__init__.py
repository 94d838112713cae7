"""Usage and cost of tenants, as one capability.

A cost estimate is only ever a price applied to what a tenant was measured to
use (or a what-if of it), and the HTML report shows the two side by side, so the
measuring (``measure``), the pricing (``cost``, with its ``prices.yaml``) and
the page (``html_report``) change together and live here together.
"""
