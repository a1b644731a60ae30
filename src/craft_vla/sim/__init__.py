"""The embedded tabletop task suite: CLEVR-like scenes, a gripper, language tasks, scripted experts,
perception questions and RLDS demonstrations (closed-loop evaluation: `craft_vla.eval.tabletop`). numpy only;
no download, no GPU.

Action (A = 3): (dx, dy, grip) in [-1, 1]; proprio (S = 4): (x, y, closed, holding); see `world`.
"""

from craft_vla.sim.demonstrations import record_demonstration, write_demonstrations
from craft_vla.sim.env import TabletopEnv
from craft_vla.sim.episodes import EVAL_SEED, make_episode
from craft_vla.sim.perception import PerceptionSet, make_perception_set
from craft_vla.sim.questions import CATEGORIES, Question, region_labels, sample_questions
from craft_vla.sim.render import Renderer
from craft_vla.sim.splits import SPLITS
from craft_vla.sim.tasks import TASK_NAMES
from craft_vla.sim.vocabulary import answer_vocabulary, vocabulary
from craft_vla.sim.world import ACTION_DIM, STATE_DIM, Scene, WorldConfig

__all__ = [
    "ACTION_DIM",
    "CATEGORIES",
    "EVAL_SEED",
    "PerceptionSet",
    "Question",
    "Renderer",
    "SPLITS",
    "STATE_DIM",
    "Scene",
    "TASK_NAMES",
    "TabletopEnv",
    "WorldConfig",
    "answer_vocabulary",
    "make_episode",
    "make_perception_set",
    "record_demonstration",
    "region_labels",
    "sample_questions",
    "vocabulary",
    "write_demonstrations",
]
