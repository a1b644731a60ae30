"""A stand-in for LIBERO's env: the same interface over a 1-D world, cheap enough for CI.

The end effector's x moves by action[0]; the episode succeeds once x reaches the goal. The initial
state is (x0, goal); a goal of −1 makes `step` raise (an episode error). Every call is logged.
"""

from dataclasses import dataclass, field

import numpy as np


class LineEnv:
    def __init__(self, bddl_file: str) -> None:
        self.bddl_file = bddl_file
        self.x = self.goal = 0.0
        self.log: list[tuple] = []

    def seed(self, seed):
        self.log.append(("seed", seed))

    def reset(self):
        self.log.append(("reset",))
        self.x = 0.0

    def set_init_state(self, state):
        self.log.append(("init", tuple(np.asarray(state).tolist())))
        self.x, self.goal = float(state[0]), float(state[1])
        return self._obs()

    def step(self, action):
        self.log.append(("step", tuple(action)))
        if self.goal == -1.0:
            raise RuntimeError("simulated physics failure")
        self.x += action[0]
        return self._obs(), 0.0, self.x >= self.goal - 1e-9, {}

    def check_success(self):
        return self.x >= self.goal

    def close(self):
        self.log.append(("close",))

    def _obs(self):
        level = int(np.clip(100 + 10 * self.x, 0, 255))
        image = np.full((16, 16, 3), level, dtype=np.uint8)
        image[0, 0] = 0  # a marker to check the 180° rotation
        return {
            "agentview_image": image,
            "robot0_eye_in_hand_image": image,
            "robot0_eef_pos": np.array([self.x, 0.0, 1.0]),
            "robot0_eef_quat": np.array([0.0, 0.0, 0.0, 1.0]),
            "robot0_gripper_qpos": np.array([0.04, -0.04]),
        }


@dataclass
class LineEnvFactory:
    """Picklable env factory; keeps the envs it made when it runs in this process."""

    made: list = field(default_factory=list)

    def __call__(self, bddl_file: str) -> LineEnv:
        env = LineEnv(bddl_file)
        self.made.append(env)
        return env
