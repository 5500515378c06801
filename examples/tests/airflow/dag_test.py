"""Run a DAG file's DAG once per logical date in real Apache Airflow (`DAG.test`, what
`airflow dags test` calls), in one process, and print one JSON line per run: the run's state
and, per task, its state and try number. Used by examples/tests/cli/airflow.rs.

    python dag_test.py DAG_FILE YYYY-MM-DD [YYYY-MM-DD ...]
"""

import datetime
import importlib.util
import json
import sys


def main() -> None:
    path, dates = sys.argv[1], sys.argv[2:]
    spec = importlib.util.spec_from_file_location("strata_dag_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    for d in dates:
        day = datetime.datetime.strptime(d, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
        dr = dag.test(logical_date=day)
        tasks = {
            ti.task_id: {"state": str(ti.state), "try_number": ti.try_number}
            for ti in dr.get_task_instances()
        }
        print("STRATA_RESULT " + json.dumps({"date": d, "state": str(dr.state), "run_id": dr.run_id, "tasks": tasks}), flush=True)


if __name__ == "__main__":
    main()
