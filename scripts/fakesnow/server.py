"""fakesnow's server with one difference made closer to Snowflake.

DuckDB refuses the second of two transactions writing the same row at once
(``TransactionException: Conflict on update``); fakesnow passes that through as an
unhandled exception (HTTP 500), so a client sees a server failure. Snowflake instead makes
the second writer wait for the table lock and, when the wait is cut short (lock timeout,
deadlock, too many waiters), answers SQL error 000625. This wrapper answers DuckDB's
write-write conflict as that error, so a client's handling of a lost lock race is tested.
Everything else is fakesnow unchanged.
"""

import sys

import duckdb
import fakesnow.cursor
import snowflake.connector.errors
from fakesnow.cli import main

_execute = fakesnow.cursor.FakeSnowflakeCursor._execute


def _execute_mapping_conflicts(self, *args, **kwargs):
    try:
        return _execute(self, *args, **kwargs)
    except duckdb.TransactionException as e:
        raise snowflake.connector.errors.ProgrammingError(
            msg=f"Statement aborted: another transaction holds a conflicting lock ({e})",
            errno=625,
            sqlstate="57014",
        ) from e


fakesnow.cursor.FakeSnowflakeCursor._execute = _execute_mapping_conflicts

if __name__ == "__main__":
    sys.exit(main())
