"""The grid connection of each site: what is throttled first under a limit.

All priority rules at the point of connection are here, in one place:

* **Import limit** (a breaker or contract limit, or a CEMS allocation): the
  import beyond ``import_limit_w · dt`` is taken away from the loads that
  registered a :class:`~cps_sim.world.populations.base.Cut` in the segment, in
  registry order — EV charging first (the breaker protects the home; a
  measured EV is not cut, it drew what was measured), then deferrable
  processes (their deadline may still hold) — and what is still beyond the
  limit is **unserved load**.
* **Export limit**: a discharge (V2X, or a battery forced by a setpoint) may
  serve the site and export up to the limit, no more — the EV and battery
  populations reduce their discharge with :meth:`Segment.export_room_wh`
  *before* the settlement, so what they could not export is not booked as
  curtailment; what still exceeds the limit after that is **curtailed PV**.

:func:`settle` computes the import and export of every site of a segment from
its net energy and applies both rules.
"""

from __future__ import annotations

import numpy as np

from cps_sim.world.populations.base import F, Segment


def settle(seg: Segment) -> tuple[F, F]:
    """Import and export [Wh] at each site of ``seg`` under its limits.

    Applies the cuts registered in ``seg.cuts`` (in order) and records the
    unserved load and curtailed PV in ``seg.unserved_wh`` / ``seg.curtailed_wh``.
    """
    g = seg.group
    net = seg.net_wh
    imp = np.maximum(net, 0.0)
    exp = imp - net
    if g.any_import_limit:
        excess = np.maximum(imp - g.import_limit_w[seg.sl] * seg.h, 0.0)
        for c in seg.cuts:
            cut = np.minimum(excess, c.site_wh)
            c.apply(cut)
            excess -= cut
            imp -= cut
        imp -= excess
        seg.unserved_wh = float(excess.sum())
    if g.any_export_limit:
        curtail = np.maximum(exp - g.export_limit_w[seg.sl] * seg.h, 0.0)
        exp -= curtail
        seg.curtailed_wh = float(curtail.sum())
    return imp, exp
