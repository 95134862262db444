"""Prompt formats, one class each, under one name for rollouts, training and files.

A format says how a rollout prompts an agent (`prompt`: the question and the rounds so far), how
training renders a trajectory as token segments with roles (`segments`), and what record a data
set of it holds (`record`):

- `FewShot` ("fewshot"): the task's few-shot examples, then the question and the rounds as ReAct
  text, ending in "Thought:" (a base model prompted, completion style: the paper's prompting).
  Prompting only; nothing is trained in it.
- `Alpaca` ("alpaca"): FireAct's Alpaca header around the question, then the rounds as ReAct text
  (agents fine-tuned on the Alpaca records, zero-shot); a record is {instruction, input, output}.
- `Chat` ("chat"): chat messages, the user's question, the assistant's Thought/Action turns, the
  user's Observation turns (agents fine-tuned on chat records, zero-shot), rendered with the
  model's chat template; a record is {"messages": [...]}.
- `SearchR1` ("search_r1"): Search-R1's instruction and tags (`<think>`, `<search>`,
  `<information>`, `<answer>`) in one assistant turn (method=search_r1; agents trained in it).

The fine-tuned formats are zero-shot: their prompt holds no few-shot examples, as their training
sequences hold none. A rollout's prompt at any round is what the format's training sequence holds
up to that round's reply, so a trajectory sampled in a format trains on the ids it was prompted
with (tests/test_formats.py checks it token by token on the released trajectories).

Segment roles: "prompt" (the question, the header, chat role headers: never trained on); "agent"
(the agent's thoughts and actions and the end of its turn: the chat template's end-of-turn
marker, in Alpaca text the "Observation:" label where the rollout stops generating, and the final
end-of-sequence token: always trained on); "observation" (what the tool returned: trained on only
with `train_on_observations`). Each segment is tokenized on its own (torchtune's way), so the
boundary between what the agent wrote and what it was given is exact by construction.

`train` writes the format it trained in beside the weights it exports (TRAINED_FORMAT), and
`method.format=auto` (every method config's default) resolves to it (`resolve_format`), so a
fine-tuned agent is evaluated in the format it was trained in, and a base model is prompted few-shot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from fireact.llm.base import Prompt
from fireact.trajectory import Step, Trajectory, FIELDS, parse_react_text, render_step, split_preamble

ALPACA_HEADER = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{question}\n\n### Response:\n"
)
ROLES = ("prompt", "agent", "observation")


@dataclass
class Segment:
    ids: list[int]
    role: str


class Format:
    """name: the `format=` / `method.format=` value. zero_shot: prompted without the task's
    few-shot examples. trainable: training sequences can be rendered in it."""

    name: ClassVar[str]
    zero_shot: ClassVar[bool] = True
    trainable: ClassVar[bool] = True

    def prompt(self, question: str, steps: list[Step], examples: str = "", thought_prefix: str = "") -> Prompt:
        """The prompt for the next round after `steps`; `thought_prefix` starts its thought
        (Reflexion's reflection cue)."""
        raise NotImplementedError

    def segments(self, trajectory: Trajectory, tokenizer) -> list[Segment]:
        """The trajectory as token segments with roles (module doc)."""
        raise NotImplementedError

    def record(self, trajectory: Trajectory) -> dict:
        """The trajectory as one record of a data set in this format."""
        raise NotImplementedError


def _history(steps: list[Step]) -> str:
    return "".join(render_step(step) for step in steps)


class FewShot(Format):
    name = "fewshot"
    zero_shot = False
    trainable = False

    def prompt(self, question, steps, examples="", thought_prefix=""):
        return f"{examples}{question}\n{_history(steps)}Thought:{thought_prefix}"

    def segments(self, trajectory, tokenizer):
        raise ValueError("format=fewshot is how a base model is prompted; train in format=alpaca or format=chat")

    def record(self, trajectory):
        raise ValueError("format=fewshot has no data set records; export alpaca or chat")


class Alpaca(Format):
    """add_eos: end the training sequence with the tokenizer's end-of-sequence token, so the model
    learns to stop after its final answer (as FireAct's Alpaca training did)."""

    name = "alpaca"

    def __init__(self, add_eos: bool = True):
        self.add_eos = add_eos

    def prompt(self, question, steps, examples="", thought_prefix=""):
        return f"{ALPACA_HEADER.format(question=question)}{_history(steps)}Thought:{thought_prefix}"

    def segments(self, trajectory, tokenizer):
        header = ALPACA_HEADER.format(question=trajectory.question)
        # The first segment gets the tokenizer's default special tokens (BOS for Llama), as
        # the hf backend's tokenizer(prompt) does at rollout time; later ones get none.
        segments = [Segment(tokenizer(header)["input_ids"], "prompt")]
        for step in trajectory.steps:
            agent = _agent_text(step)
            if agent:
                segments.append(Segment(_encode(tokenizer, agent), "agent"))
            if step.observation is not None:
                # After an action the label is the agent's: writing it ends the turn (the
                # rollout's stop string is "\nObservation:"); what the tool returned is not.
                segments.append(Segment(_encode(tokenizer, "Observation:"), "agent" if agent else "observation"))
                segments.append(Segment(_encode(tokenizer, f" {step.observation}\n"), "observation"))
        if self.add_eos and tokenizer.eos_token_id is not None:
            segments.append(Segment([tokenizer.eos_token_id], "agent"))
        return segments

    def record(self, trajectory):
        return {"instruction": trajectory.question, "input": "", "output": trajectory.react_text()}


class Chat(Format):
    """The model's chat template over the trajectory's messages (`messages`).

    Each message's text is what the template adds when that message is appended, so the
    concatenation is exactly the template's rendering of the whole conversation (checked: a
    template that rewrites earlier turns when later ones are added is refused). An assistant
    message is split into its role header (prompt: the backend supplies it with
    add_generation_prompt) and its content with the end-of-turn marker (agent)."""

    name = "chat"

    def prompt(self, question, steps, examples="", thought_prefix=""):
        messages = steps_to_messages(question, steps)
        if thought_prefix:
            # An assistant turn cannot be prefilled through every chat API, so the cue rides on
            # the last observation.
            messages[-1] = {**messages[-1], "content": messages[-1]["content"] + f"\nThought:{thought_prefix}"}
        return messages

    def segments(self, trajectory, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"format=chat needs a tokenizer with a chat template, and {tokenizer.name_or_path!r} "
                             f"has none; use format=alpaca")
        messages = self.record(trajectory)["messages"]
        segments: list[Segment] = []
        rendered = ""
        for index, message in enumerate(messages):
            if message["role"] == "assistant":
                with_header = _render(tokenizer, messages[:index], add_generation_prompt=True)
                segments.append(Segment(_encode(tokenizer, _suffix(with_header, rendered)), "prompt"))
                rendered = with_header
            full = _render(tokenizer, messages[: index + 1])
            piece = _suffix(full, rendered)
            role = "agent" if message["role"] == "assistant" else "observation" if index > 0 else "prompt"
            segments.append(Segment(_encode(tokenizer, piece), role))
            rendered = full
        return segments

    def record(self, trajectory):
        return {"messages": steps_to_messages(trajectory.question, trajectory.steps)}


# Search-R1's instruction (scripts/data_process/nq_search.py, make_prefix, template "base"), word for word:
# its checkpoints were trained under it.
SEARCH_R1_INSTRUCTION = (
    "Answer the given question. "
    "You must conduct reasoning inside <think> and </think> first every time you get new information. "
    "After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query </search> "
    "and it will return the top searched results between <information> and </information>. "
    "You can search as many times as your want. "
    "If you find no further external knowledge needed, you can directly provide the answer inside <answer> and "
    "</answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)
# What Search-R1's harness answers a reply with neither tag (search_r1/llm_agent/generation.py).
SEARCH_R1_INVALID = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and </search>. "
    "If I want to give the final answer, I should put the answer between <answer> and </answer>. Let me try again.\n"
)


class SearchR1(Format):
    """Search-R1's protocol: the instruction with the question as the user's message, through the
    model's chat template; then one assistant turn that every round continues: the agent's
    `<think> ... </think>` and `<search> query </search>`, the harness's `<information>` block
    (the retrieved passages: an observation, never trained on), until `<answer> ... </answer>` and
    no more. A reply with neither tag is an invalid step (its raw text in
    `Step.action`, no argument) and gets Search-R1's invalid-action message.

    Prompts after the first continue the assistant's turn, which only token ids can say: a rollout
    in this format runs token in, token out (fireact.agents.methods.SearchR1 checks the backend).
    A ReAct trajectory (the released ones) renders in it when its only tool is search."""

    name = "search_r1"

    @staticmethod
    def pose(question: str) -> str:
        """The question as Search-R1's data preparation writes it: stripped, ending in "?"."""
        question = question.strip()
        return question if question.endswith("?") else question + "?"

    def prompt(self, question, steps, examples="", thought_prefix=""):
        if steps:
            raise ValueError("format=search_r1 continues the assistant's turn after the first round, which chat "
                             "messages cannot hold; it runs token in, token out (backend=hf, backend=vllm, or a "
                             "vLLM server with backend.token_ids=true)")
        return [{"role": "user", "content": SEARCH_R1_INSTRUCTION.format(question=self.pose(question))}]

    def reply_text(self, step: Step) -> str:
        """What the agent writes for `step`, through its closing tag."""
        if step.argument is None:
            return step.action
        if not (step.is_finish or step.action.lower() == "search"):
            raise ValueError(f"format=search_r1 has no tag for the action {step.action_text!r}: its tools are "
                             f"search and the answer")
        tag = "answer" if step.is_finish else "search"
        think = f"<think> {step.thought} </think>\n" if step.thought else ""
        return f"{think}<{tag}> {step.argument} </{tag}>"

    def observation_text(self, step: Step) -> str:
        """What the harness adds after `step`'s reply: the information block, Search-R1's
        invalid-action message, or nothing after the answer."""
        if step.is_finish:
            return ""
        if step.argument is None:
            return SEARCH_R1_INVALID
        return f"\n\n<information>{(step.observation or '').strip()}</information>\n\n"

    def segments(self, trajectory, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"format=search_r1 puts its instruction through the model's chat template, and "
                             f"{tokenizer.name_or_path!r} has none; use format=alpaca")
        [user] = self.prompt(trajectory.question, [])
        head = tokenizer.apply_chat_template([user], add_generation_prompt=True, return_dict=True)["input_ids"]
        segments = [Segment(list(head), "prompt")]
        for step in trajectory.steps:
            segments.append(Segment(_encode(tokenizer, self.reply_text(step)), "agent"))
            if not step.is_finish:
                segments.append(Segment(_encode(tokenizer, self.observation_text(step)), "observation"))
        return segments  # the turn ends at </answer>, where a rollout stops generating (a stop string)

    def record(self, trajectory):
        [user] = self.prompt(trajectory.question, [])
        turn = "".join(self.reply_text(step) + self.observation_text(step) for step in trajectory.steps)
        return {"messages": [user, {"role": "assistant", "content": turn}]}


FORMATS: dict[str, type[Format]] = {"fewshot": FewShot, "alpaca": Alpaca, "chat": Chat, "search_r1": SearchR1}


def get_format(name: str) -> Format:
    """The format called `name`, with its default settings."""
    if name not in FORMATS:
        raise ValueError(f"unknown prompt format {name!r}; choose one of {list(FORMATS)}")
    return FORMATS[name]()


def _agent_text(step: Step) -> str:
    """The step's Thought/Action lines, without its observation ("" if it has neither)."""
    if not step.thought and not step.action and step.argument is None:
        return ""
    return render_step(replace(step, observation=None))


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _suffix(full: str, prefix: str) -> str:
    if not full.startswith(prefix):
        raise ValueError("the tokenizer's chat template renders earlier messages differently once later ones are "
                         "added, so per-message loss masking cannot be exact; use format=alpaca for this model")
    return full[len(prefix):]


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- chat messages and Alpaca prompts as steps ----------------------------------------
def steps_to_messages(question: str, steps: list[Step]) -> list[dict[str, str]]:
    """Steps to chat turns; steps with no observation share the next step's reply."""
    messages = [{"role": "user", "content": question}]
    reply: list[str] = []
    for step in steps:
        reply.append(render_step(replace(step, observation=None)).removesuffix("\n"))
        if step.observation is not None or step is steps[-1]:
            messages.append({"role": "assistant", "content": "\n".join(reply)})
            reply = []
        if step.observation is not None:
            messages.append({"role": "user", "content": f"Observation: {step.observation}"})
    return messages


def messages_to_steps(messages: list[dict[str, str]], repairs: list[str] | None = None) -> tuple[str, list[Step]]:
    """[user question, assistant Thought/Action, user Observation, ...] -> (question, steps).

    Two quirks of the released chat sets are repaired and noted in `repairs`: a record whose
    first message is the assistant's (the question is then the text before its first
    Action line), and an assistant message that only echoes an "Observation:" (dropped: the
    environment's observation follows as the user's turn).
    """
    repairs = [] if repairs is None else repairs
    if not messages:
        raise ValueError("chat record has no messages")
    first = messages[0]
    if first.get("role") == "user":
        question, rest = first["content"], messages[1:]
    elif first.get("role") == "assistant":
        question, content = split_preamble(first["content"])
        if not question.strip() or not content:
            raise ValueError("chat record must start with the user's question")
        repairs.append("question taken from the first assistant message")
        rest = [{"role": "assistant", "content": content}] + messages[1:]
    else:
        raise ValueError(f"chat record starts with role {first.get('role')!r}, not the user's question")
    steps: list[Step] = []
    for message in rest:
        role, content = message.get("role"), message.get("content", "")
        if role == "assistant" and content.startswith("Observation: "):
            repairs.append("dropped an observation written by the assistant")
        elif role == "assistant":
            steps.extend(parse_react_text(content if content.startswith(FIELDS) else "Thought: " + content))
        elif role == "user":
            if not content.startswith("Observation: ") or not steps:
                raise ValueError(f"user turn is not an observation of a previous action: {content[:80]!r}")
            steps[-1].observation = content[len("Observation: "):]
        else:
            raise ValueError(f"unexpected role {role!r}")
    return question, steps


def split_alpaca_prompt(text: str) -> tuple[str, str]:
    """An Alpaca-prompted string -> (question, response)."""
    head, marker, response = text.partition("\n\n### Response:\n")
    prefix = ALPACA_HEADER.split("{question}")[0]
    if not marker or not head.startswith(prefix):
        raise ValueError("not an Alpaca-prompted trajectory (header or '### Response:' missing)")
    return head[len(prefix):], response


# --- the format a model was trained in --------------------------------------------------
TRAINED_FORMAT = "fireact_format.json"  # {"format": "alpaca" | "chat"}, in an adapter or model folder train wrote


def write_trained_format(folder: str | Path, fmt: str) -> None:
    (Path(folder) / TRAINED_FORMAT).write_text(json.dumps({"format": fmt}) + "\n")


def trained_format(folder: str | Path | None) -> str | None:
    """The format a folder's weights were fine-tuned in, or None for weights train did not write."""
    record = Path(str(folder)).expanduser() / TRAINED_FORMAT if folder else None
    if record is None or not record.is_file():
        return None
    fmt = json.loads(record.read_text())["format"]
    if fmt not in FORMATS:
        raise ValueError(f"{record}: unknown format {fmt!r}; choose one of {list(FORMATS)}")
    return fmt


def resolve_format(requested: str, model) -> str:
    """`requested` unless it is auto; auto: the format of model.adapter, else of model.path, as
    train recorded it; fewshot for a model train did not write (a base model, a served name)."""
    if requested != "auto":
        return requested
    adapter = model.get("adapter")
    if adapter:
        fmt = trained_format(adapter)
        if fmt is None:
            raise ValueError(f"model.adapter={adapter!r} has no {TRAINED_FORMAT} (an adapter trained elsewhere, or "
                             f"before train recorded formats), so method.format=auto cannot tell its format; "
                             f"set method.format=alpaca or method.format=chat")
        return fmt
    return trained_format(model.get("path")) or "fewshot"
