"""Node tree: aggregation, conservation, capacity overloads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.grid import network as nw


def small_tree():
    #        0 area (cap 100 kW)
    #        |
    #        1 substation (cap 80 kW)
    #      /   \
    #  2 feeder  3 feeder (cap 30 kW import, 10 kW export)
    #   / \        |
    #  4   5       6   sites
    return nw.node_tree(
        [-1, 0, 1, 1, 2, 2, 3],
        import_capacity_w=[100e3, 80e3, np.inf, 30e3, np.inf, np.inf, np.inf],
        export_capacity_w=[100e3, 80e3, np.inf, 10e3, np.inf, np.inf, np.inf],
    )


def test_hand_aggregation_and_overload():
    t = small_tree()
    own = np.zeros(7)
    own[[4, 5, 6]] = [20e3, 15e3, 40e3]
    flow = nw.aggregate_up(t, own)
    # feeder 2 = 20 + 15 = 35 kW; feeder 3 = 40 kW; substation = 75 kW; area = 75 kW
    np.testing.assert_allclose(flow, [75e3, 75e3, 35e3, 40e3, 20e3, 15e3, 40e3])
    rep = nw.check_capacity(t, flow, 900.0)
    # feeder 3 is 10 kW over its 30 kW limit for 15 min = 2.5 kWh
    assert rep.overloaded.tolist() == [False, False, False, True, False, False, False]
    assert rep.overload_energy_wh[3] == pytest.approx(2500.0)
    assert rep.loading[3] == pytest.approx(40 / 30)


def test_reverse_flow_export_limit():
    t = small_tree()
    own = np.zeros(7)
    own[6] = -16e3  # PV export at site 6
    rep = nw.check_capacity(t, nw.aggregate_up(t, own), 3600.0)
    # 16 kW reverse through feeder 3 with a 10 kW export limit: 6 kWh over 1 h
    assert rep.overload_energy_wh[3] == pytest.approx(6000.0)
    assert rep.overload_w[1] == 0.0


def test_time_block_matches_single_ticks_and_injections():
    tree, site_nodes = nw.site_feeder_substation_area(
        1000, 50, 5, 2, feeder_capacity_w=150e3, substation_capacity_w=600e3
    )
    rng = np.random.default_rng(3)
    p = rng.normal(2e3, 3e3, size=(24, 1000))
    own = nw.injections(tree, site_nodes, p)
    block = nw.aggregate_up(tree, own)
    for k in (0, 11, 23):
        one = nw.aggregate_up(tree, nw.injections(tree, site_nodes, p[k]))
        np.testing.assert_allclose(block[k], one, rtol=1e-12, atol=1e-6)
    roots = np.flatnonzero(tree.parent == -1)
    # conservation: root flows sum to the sum of all site net powers, every tick
    np.testing.assert_allclose(block[:, roots].sum(1), p.sum(1), rtol=1e-12, atol=1e-6)
    rep = nw.check_capacity(tree, block, 900.0)
    assert rep.overload_energy_wh.shape == (tree.n,)
    assert np.all(rep.overload_energy_wh >= 0)


def test_cycle_and_bad_parent_rejected():
    with pytest.raises(ValueError, match="cycle"):
        nw.node_tree([1, 0])
    with pytest.raises(ValueError, match=r"parent\[1\] = 7"):
        nw.node_tree([-1, 7])


def test_10000_sites_fast_and_consistent():
    tree, sites = nw.site_feeder_substation_area(10_000, 100, 10, 5)
    p = np.ones(10_000) * 1e3
    flow = nw.aggregate_up(tree, nw.injections(tree, sites, p))
    assert flow[tree.parent == -1].sum() == pytest.approx(10_000 * 1e3)
    feeders = [i for i, k in enumerate(tree.kind) if k == "feeder"]
    np.testing.assert_allclose(flow[feeders], 100 * 1e3)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(1, 60))
def test_property_random_trees_match_brute_force(data, n):
    parent = [-1] + [data.draw(st.integers(-1, i - 1)) for i in range(1, n)]
    own = np.array(data.draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n)))
    t = nw.node_tree(parent)
    flow = nw.aggregate_up(t, own)
    brute = own.copy()
    for j in range(n):  # add each node's own power to all its ancestors
        a = parent[j]
        while a >= 0:
            brute[a] += own[j]
            a = parent[a]
    np.testing.assert_allclose(flow, brute, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(nw.aggregate_up(t, own[None, :])[0], brute, rtol=1e-9, atol=1e-6)
    roots = np.array(parent) == -1
    assert flow[roots].sum() == pytest.approx(own.sum(), abs=1e-5)
