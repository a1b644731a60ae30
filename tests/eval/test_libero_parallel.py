"""Episode logic and the parallel runner on the fake 1-D env (no simulator): protocol order, limits,
errors, and the same per-episode outcomes with 1 and 2 worker processes."""

import numpy as np
import pytest
from fake_libero import LineEnvFactory

from craft_vla.eval.libero_env import RenderingBackendError
from craft_vla.eval.libero_episode import EpisodeSpec, run_libero_episodes
from craft_vla.eval.libero_policy import RandomChunkPolicy, ReplayChunkPolicy
from craft_vla.eval.protocol import LiberoProtocol

PROTOCOL = LiberoProtocol(jpeg_quality=None, settle_steps=3, num_open_loop_steps=3)
SETTLE = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def spec(task=0, trial=0, x0=0.0, goal=1.0, max_steps=20):
    return EpisodeSpec(
        suite="fake",
        task_index=task,
        task=f"task{task}",
        instruction=f"reach {goal}",
        trial=trial,
        init_state=np.array([x0, goal]),
        bddl_file=f"task{task}.bddl",
        max_steps=max_steps,
    )


def replay(rows=40, dx=0.1):
    """Row t moves by dx, carries t in dim 1 and alternates the gripper between open (1) and closed (0)."""
    actions = np.zeros((rows, 7))
    actions[:, 0], actions[:, 1], actions[:, 6] = dx, np.arange(rows), np.arange(rows) % 2 == 0
    return actions


class Recording(ReplayChunkPolicy):
    """Replay that records the observations it was queried with."""

    def __init__(self, actions):
        super().__init__(actions)
        self.queries = []

    def predict_chunks(self, observations):
        self.queries.append([dict(o) for o in observations])
        return super().predict_chunks(observations)


def test_episode_follows_the_protocol_and_executes_chunks_in_order():
    factory, policy = LineEnvFactory(), Recording(replay())
    [result] = run_libero_episodes([spec()], policy, factory, PROTOCOL, progress=False)
    # x grows by 0.1 per step from 0: the goal 1.0 is reached at the 10th policy step
    assert result.success and result.steps == 10 and result.error == ""
    log = factory.made[0].log
    assert log[:3] == [("seed", 0), ("reset",), ("init", (0.0, 1.0))]
    assert [entry[1] for entry in log[3:6]] == [SETTLE] * 3
    executed = [entry[1] for entry in log[6:] if entry[0] == "step"]
    assert [a[1] for a in executed] == list(range(10))  # rows 0..9 in order, 3 per chunk
    assert [a[6] for a in executed] == [-1.0 if t % 2 == 0 else 1.0 for t in range(10)]  # open -> −1
    assert [q[0]["step"] for q in policy.queries] == [0, 3, 6, 9]
    first = policy.queries[0][0]
    assert first["instruction"] == "reach 1.0" and (first["task_index"], first["trial"]) == (0, 0)
    assert first["full_image"][-1, -1, 0] == 0 and first["full_image"][0, 0, 0] == 100  # rotated 180°
    assert first["state"] == pytest.approx([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.04, -0.04])


def test_step_limit_and_episode_errors_are_failures():
    factory = LineEnvFactory()
    episodes = [spec(trial=0, goal=100.0, max_steps=7), spec(trial=1, goal=-1.0), spec(trial=2, goal=0.25)]
    limit, error, ok = run_libero_episodes(
        episodes, ReplayChunkPolicy(replay()), factory, PROTOCOL, progress=False
    )
    assert not limit.success and limit.steps == 7 and limit.error == ""
    assert not error.success and "simulated physics failure" in error.error
    assert ok.success and ok.steps == 3
    assert len(factory.made) == 1  # one scene: the simulator is reused across its episodes


def _mixed_episodes():
    """Two tasks × five trials with different starts and goals: successes, time-outs and an error."""
    episodes = []
    for task in range(2):
        for trial in range(5):
            goal = -1.0 if (task, trial) == (1, 2) else 0.3 + 0.4 * trial + 0.2 * task
            episodes.append(spec(task=task, trial=trial, x0=0.05 * trial, goal=goal, max_steps=12))
    return episodes


def _outcomes(results):
    return [(r.suite, r.task_index, r.trial, r.success, r.steps, r.error) for r in results]


def test_two_worker_processes_give_the_same_outcomes_as_one():
    episodes, policy = _mixed_episodes(), ReplayChunkPolicy(replay(dx=0.15))
    one = run_libero_episodes(episodes, policy, LineEnvFactory(), PROTOCOL, num_envs=1, progress=False)
    two = run_libero_episodes(episodes, policy, LineEnvFactory(), PROTOCOL, num_envs=2, progress=False)
    assert _outcomes(one) == _outcomes(two)
    assert [(r.task_index, r.trial) for r in two] == [(e.task_index, e.trial) for e in episodes]
    assert 0 < sum(r.success for r in one) < len(one)  # the comparison covers both outcomes
    random_one, random_two = (
        run_libero_episodes(
            episodes, RandomChunkPolicy(), LineEnvFactory(), PROTOCOL, num_envs=n, progress=False
        )
        for n in (1, 2)
    )
    assert _outcomes(random_one) == _outcomes(random_two)


def test_a_policy_with_the_wrong_action_dimension_is_refused():
    with pytest.raises(ValueError, match="6 delta EEF dims"):
        run_libero_episodes(
            [spec()], ReplayChunkPolicy(np.zeros((8, 4))), LineEnvFactory(), PROTOCOL, progress=False
        )


class BrokenRenderer:
    def __call__(self, bddl_file):
        raise RuntimeError("eglInitialize failed: cannot open an EGL display")


@pytest.mark.parametrize("num_envs", [1, 2])
def test_a_renderer_failure_stops_the_run_with_the_fix(num_envs):
    with pytest.raises(RenderingBackendError, match="MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa"):
        run_libero_episodes(
            [spec(), spec(trial=1)],
            ReplayChunkPolicy(replay()),
            BrokenRenderer(),
            PROTOCOL,
            num_envs=num_envs,
            progress=False,
        )
