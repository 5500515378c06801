"""Run Strata from Apache Airflow.

``StrataOperator`` builds one node (a pipeline or a model) of a Strata project by calling the
``strata`` binary: ``strata build PROJECT --select NODE --logical-date {{ ds }} --run-id
{{ run_id }}``. Strata's exit status decides what Airflow does with a failure:

* 75 (temporary: a service unavailable, a rate limit, a timeout) and 130 (cancelled by
  SIGTERM, as when a worker shuts down) raise ``AirflowException``: the task is retried
  (``retries`` in the DAG's ``default_args``);
* every other non-zero status (bad data 65, missing input 66, a bug 70, a conflict 73,
  credentials 77, configuration 78) raises ``AirflowFailException``: retrying cannot help, so
  the task fails at once and says why.

When Airflow kills the task (``execution_timeout``, a mark-failed in the UI), ``on_kill``
sends SIGTERM to Strata, which cancels cleanly: a cancelled epoch or model build leaves
nothing partial visible, and the retry or the next run does it once.

``strata airflow dag PROJECT`` writes a DAG of these operators for a project.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any

from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

__all__ = ["RETRYABLE", "StrataOperator", "EXIT_STATUSES"]

#: Strata's exit statuses (the README's "Exit status" table).
EXIT_STATUSES = {
    0: "ok",
    1: "failure",
    65: "bad data",
    66: "not found",
    70: "internal error",
    73: "conflict",
    75: "temporary",
    77: "credentials",
    78: "configuration",
    130: "cancelled",
}

#: The statuses worth retrying.
RETRYABLE = frozenset({75, 130})


class StrataOperator(BaseOperator):
    """Build one node of a Strata project.

    :param project: the project directory (holding ``strata.yaml``) on the worker.
    :param node: the node to build (``bronze.orders``, ``silver.orders``).
    :param logical_date: the day the run is about; templated, ``{{ ds }}`` by default.
    :param strata: the ``strata`` binary (a path, or a name on ``PATH``).
    :param extra_args: more arguments for ``strata build`` (``["--full-refresh"]``).
    :param env: environment of the process (default: the worker's); templated.
    """

    template_fields: Sequence[str] = ("logical_date", "run_id_arg", "env", "extra_args")
    ui_color = "#dbe9f6"

    def __init__(
        self,
        *,
        project: str,
        node: str,
        logical_date: str = "{{ ds }}",
        strata: str = "strata",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project = project
        self.node = node
        self.logical_date = logical_date
        self.run_id_arg = "{{ run_id }}"
        self.strata = strata
        self.extra_args = list(extra_args)
        self.env = env
        self._hook: SubprocessHook | None = None

    def command(self) -> list[str]:
        """The command line this task runs (after templating)."""
        binary = shutil.which(self.strata) or self.strata
        return [
            binary,
            "build",
            self.project,
            "--select",
            self.node,
            "--logical-date",
            self.logical_date,
            "--run-id",
            self.run_id_arg,
            *self.extra_args,
        ]

    def execute(self, context: Any) -> str:
        env = dict(os.environ if self.env is None else self.env)
        # Strata's logs go to stderr, merged into the task log; no colour codes there.
        env.setdefault("NO_COLOR", "1")
        self._hook = SubprocessHook()
        result = self._hook.run_command(command=self.command(), env=env, cwd=self.project)
        code = result.exit_code
        if code == 0:
            return result.output
        what = EXIT_STATUSES.get(code, "failure")
        message = f"strata exited with status {code} ({what}) building {self.node}: {result.output}"
        if code in RETRYABLE:
            raise AirflowException(message)
        raise AirflowFailException(message)

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.send_sigterm()
