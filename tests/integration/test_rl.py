"""Gymnasium environment (optional extra ``rl``): API conformance, rollouts, seeding."""

from __future__ import annotations

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from cps_sim.rl import ENV_ID, OBS_FEATURES, CpsSimEnv, default_scenario  # noqa: E402
from cps_sim.scenario.schema import Scenario  # noqa: E402


def rollout(env, seed, policy):
    obs, _ = env.reset(seed=seed)
    traj, rewards = [obs], []
    done = False
    unmet = 0.0
    while not done:
        obs, r, term, trunc, info = env.step(policy(obs))
        assert env.observation_space.contains(obs)
        traj.append(obs)
        rewards.append(r)
        unmet += info["unmet_ev_kwh"]
        done = term or trunc
    info["episode_unmet_ev_kwh"] = unmet
    return np.array(traj), np.array(rewards), info


def test_check_env_both_action_modes():
    check_env(CpsSimEnv(), skip_render_check=True)
    check_env(CpsSimEnv(action_mode="aggregate"), skip_render_check=True)


def test_registered_and_spaces_documented():
    env = gymnasium.make(ENV_ID)
    assert env.observation_space.shape == (len(OBS_FEATURES),)
    # 10 homes: 10 EV slots + 10 battery slots
    assert env.action_space.shape == (20,)
    env.close()


def test_random_rollout_reward_is_minus_cost():
    env = CpsSimEnv()
    env.action_space.seed(1)
    _, rewards, info = rollout(env, 3, lambda o: env.action_space.sample())
    assert len(rewards) == 96  # one day of 15-min steps, then truncated
    assert np.isfinite(rewards).all()
    # rewards add up to -(energy cost) - 50 JPY/kWh x EV energy unmet at departures
    assert rewards.sum() == pytest.approx(
        -info["episode_cost_jpy"] - 50.0 * info["episode_unmet_ev_kwh"], rel=1e-9
    )
    k = env.recorder.kpis(env.recorder.events())
    assert abs(k["balance_residual_wh"]) < 1e-3  # energy conserved under random actions


def test_same_seed_same_trajectory_other_seed_differs():
    env = CpsSimEnv(action_mode="aggregate")
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (96, 2)).astype(np.float32)
    it = iter(actions)
    a1, r1, _ = rollout(env, 7, lambda o: next(it))
    it = iter(actions)
    a2, r2, _ = rollout(env, 7, lambda o: next(it))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(r1, r2)
    it = iter(actions)
    a3, _, _ = rollout(env, 8, lambda o: next(it))
    assert not np.array_equal(a1, a3)


def test_charging_at_night_beats_idle_on_unmet_penalty():
    # charging every EV fully always meets departures; never charging leaves energy
    # unmet (penalised): the reward must rank the first higher
    env = CpsSimEnv(action_mode="aggregate", unmet_penalty_jpy_per_kwh=1000.0)
    _, r_charge, i_charge = rollout(env, 1, lambda o: np.array([1.0, 0.0], np.float32))
    _, r_idle, i_idle = rollout(env, 1, lambda o: np.array([0.0, 0.0], np.float32))
    assert env.recorder.events().num_rows > 0
    assert r_charge.sum() > r_idle.sum()
    assert i_charge["episode_import_kwh"] > i_idle["episode_import_kwh"]


def test_battery_action_moves_the_battery():
    # every battery half full, so that +0.475 fits (the default start SoC is sampled)
    d = default_scenario().model_dump(mode="json")
    d["sites"][0]["battery"]["initial_soc"] = 0.5
    env = CpsSimEnv(Scenario.model_validate(d), action_mode="aggregate")
    env.reset(seed=2)
    soc0 = env._obs()[OBS_FEATURES.index("battery_soc_mean")]
    for _ in range(4):  # 1 h charging at full power: 5 kW x 0.95 / 10 kWh = +0.475
        obs, *_ = env.step(np.array([0.0, 1.0], np.float32))
    soc1 = obs[OBS_FEATURES.index("battery_soc_mean")]
    assert soc1 - soc0 == pytest.approx(0.475, abs=1e-3)


def test_rejects_group_with_a_strategy():
    sc = default_scenario().model_copy(
        update={"control": default_scenario().control.model_copy(update={"ev_strategy": "now"})}
    )
    with pytest.raises(ValueError, match="ev_strategy"):
        CpsSimEnv(sc)


@pytest.mark.parametrize(
    "update,words",
    [
        ({"ems": {"homes": {"kind": "hems"}}}, ["HEMS", "ems.homes"]),
        (
            {
                "sites": [
                    *default_scenario().model_dump()["sites"],
                    {"name": "shops", "count": 2, "kind": "building"},
                ],
                "ems": {"shops": {"kind": "cems", "member_groups": ["homes"]}},
            },
            ["CEMS", "ems.shops", "member group"],
        ),
        ({"vpp": {"groups": ["homes"]}}, ["VPP", "vpp.groups"]),
        ({"bridge": {"expose": [{"group": "homes"}]}}, ["external controller", "bridge.expose"]),
    ],
    ids=["hems", "cems member", "vpp", "mqtt controller"],
)
def test_refuses_a_group_that_another_controller_drives(update, words):
    from cps_sim.scenario.schema import Scenario

    data = default_scenario().model_dump()
    data.update(update)
    sc = Scenario.model_validate(data)
    with pytest.raises(ValueError) as e:
        CpsSimEnv(sc)
    msg = str(e.value)
    assert "'homes' is already driven by" in msg and "only controller" in msg
    for w in words:
        assert w in msg, msg


def test_a_group_next_to_a_controlled_one_is_accepted(tmp_path):
    data = default_scenario().model_dump()
    data["sites"].append({"name": "shops", "count": 2, "kind": "building"})
    data["ems"] = {"shops": {"kind": "bems"}}
    data["vpp"] = {"groups": ["shops"]}
    from cps_sim.scenario.schema import Scenario

    env = CpsSimEnv(Scenario.model_validate(data), group="homes")
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    # the same through a scenario file (the public path)
    import yaml

    f = tmp_path / "s.yaml"
    data["ems"] = {"homes": {"kind": "hems"}}
    f.write_text(yaml.safe_dump(Scenario.model_validate(data).model_dump(mode="json")))
    with pytest.raises(ValueError, match="HEMS"):
        CpsSimEnv(f, group="homes")
