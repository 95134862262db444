"""`finetune=openai`: fine-tune a hosted model (GPT-3.5 in the paper) through the OpenAI API.

Uploads the chat export of the training trajectories, creates the fine-tuning job, polls it
until it ends, and records the job and the resulting model name in the run folder
(openai_job.json, train_summary.json). The job id is written as soon as the job exists, so an
interrupted wait goes on with `resume=true` (same run folder) without uploading or paying twice.
Use the result with `model=gpt35 model.path=<fine_tuned_model>` and `backend=openai`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import openai

from fireact.train.datamodule import load_trajectories
from fireact.train.result import TrainedModel
from fireact.trajectory_files import write_chat

log = logging.getLogger(__name__)

FINAL = ("succeeded", "failed", "cancelled")


class OpenAIFinetune:
    """base_model: the model to fine-tune. n_epochs: an int or "auto". suffix: part of the new
    model's name. base_url: the API root (null: the SDK's default or OPENAI_BASE_URL).
    api_key_env: the environment variable holding the key. poll_seconds: wait between status
    checks. timeout_seconds: give up waiting after this long (null: never; the job goes on and
    resume=true picks it up). max_retries: the SDK's retries on 429/5xx/connection errors.
    """

    kind = "openai"

    def __init__(
        self,
        base_model: str = "gpt-3.5-turbo-0613",
        n_epochs: int | str = "auto",
        suffix: str | None = "fireact",
        seed: int | None = None,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        poll_seconds: float = 30.0,
        timeout_seconds: float | None = None,
        max_retries: int = 5,
    ):
        if base_model.startswith("embedded:"):
            raise ValueError(
                f"finetune=openai fine-tunes a hosted model, not {base_model!r}; add model=gpt35 "
                f"(or set finetune.base_model to an OpenAI model name)"
            )
        self.base_model, self.n_epochs, self.suffix, self.seed = base_model, n_epochs, suffix, seed
        self.base_url, self.api_key_env = base_url, api_key_env
        self.poll_seconds, self.timeout_seconds, self.max_retries = poll_seconds, timeout_seconds, max_retries

    def client(self) -> openai.OpenAI:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise RuntimeError(
                f"finetune=openai needs an API key in ${self.api_key_env}; export it, or set "
                f"finetune.api_key_env to the variable that holds it"
            )
        return openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=self.max_retries)

    def run_job(self, cfg) -> dict:
        """Upload, start (or, with resume=true, find again) the job, wait for its end; the summary."""
        output_dir = Path(cfg.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        record_path = output_dir / "openai_job.json"
        client = self.client()
        if cfg.resume and record_path.exists():
            record = json.loads(record_path.read_text())
            log.info("resuming: waiting on job %s from %s", record["job_id"], record_path)
            job = client.fine_tuning.jobs.retrieve(record["job_id"])
        else:
            record, job = self.start(client, cfg.data.path, cfg.data.get("limit"), output_dir)
            record_path.write_text(json.dumps(record, indent=2))
        job = self.wait(client, job, record_path)
        record.update(status=job.status, fine_tuned_model=job.fine_tuned_model, trained_tokens=job.trained_tokens)
        record_path.write_text(json.dumps(record, indent=2))
        if job.status != "succeeded":
            reason = job.error.message if job.error and job.error.message else "no reason given"
            raise RuntimeError(f"OpenAI fine-tuning job {job.id} ended {job.status}: {reason} (record: {record_path})")
        summary = {"finetune": self.kind, "model": self.base_model, "outputs": {"fine_tuned_model": job.fine_tuned_model}, **record}
        TrainedModel(summary).write(output_dir)
        log.info("fine-tuned model: %s (use model.path=%s backend=openai)", job.fine_tuned_model, job.fine_tuned_model)
        return summary

    def start(self, client: openai.OpenAI, data_path: str, limit: int | None, output_dir: Path):
        trajectories = load_trajectories(data_path)[:limit]
        export = output_dir / "train_chat.jsonl"
        write_chat(export, trajectories)
        with export.open("rb") as upload:
            file = client.files.create(file=(export.name, upload), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=self.base_model,
            training_file=file.id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": self.n_epochs}}},
            suffix=self.suffix,
            seed=self.seed,
        )
        log.info("uploaded %d trajectories as %s; job %s created", len(trajectories), file.id, job.id)
        record = {"job_id": job.id, "training_file": file.id, "examples": len(trajectories),
                  "base_model": self.base_model, "status": job.status}
        return record, job

    def wait(self, client: openai.OpenAI, job, record_path: Path):
        start = time.monotonic()
        while job.status not in FINAL:
            if self.timeout_seconds is not None and time.monotonic() - start > self.timeout_seconds:
                raise TimeoutError(
                    f"OpenAI fine-tuning job {job.id} still {job.status} after {self.timeout_seconds} s; it goes on "
                    f"running: rerun in the same folder with resume=true to keep waiting (record: {record_path})"
                )
            time.sleep(self.poll_seconds)
            job = client.fine_tuning.jobs.retrieve(job.id)
            log.info("job %s: %s", job.id, job.status)
        return job
