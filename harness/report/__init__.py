"""What a session of scenarios leaves for people and machines: pass rates of repeated runs
(``rate``), results.json (``results``), summary.md (``summary``), the self-contained HTML
report (``html``, with ``plots`` and the sequence diagrams of ``diagram``), and the pytest
side that collects and writes them (``session``)."""
