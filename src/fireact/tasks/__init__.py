"""Tasks: build one from its config group (`conf/task/*.yaml`) with hydra.utils.instantiate."""

from fireact.tasks.bamboogle import Bamboogle
from fireact.tasks.base import METHODS, Question, Task
from fireact.tasks.hotpotqa import HotpotQA
from fireact.tasks.mmlu import MMLU
from fireact.tasks.qa import QADataset
from fireact.tasks.strategyqa import StrategyQA

__all__ = ["METHODS", "Bamboogle", "HotpotQA", "MMLU", "QADataset", "Question", "StrategyQA", "Task"]
