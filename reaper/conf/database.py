"""[database] and [api_database]: Nova's databases (reaper.nova.db connects to them)."""
from __future__ import annotations

from oslo_config import cfg

database_opts = [
    cfg.StrOpt("connection", secret=True,
               help="SQLAlchemy URL of Nova's main (cell) database, e.g. "
                    "mysql+pymysql://nova:PASSWORD@controller/nova?charset=utf8 or "
                    "sqlite:////path/nova.sqlite. Read every pass; written only to "
                    "finalize a reclaim."),
    cfg.IntOpt("connection_recycle_time", default=3600, min=-1,
               help="Seconds after which a pooled connection is replaced (pool_recycle); "
                    "keep below the server's wait_timeout. -1 never recycles."),
    cfg.IntOpt("max_retries", default=3, min=0,
               help="How many times to retry connecting at start-up (wait_for_db) before "
                    "giving up. A pass that cannot reach the DB does no destructive work "
                    "and retries on the next pass."),
    cfg.FloatOpt("retry_interval", default=1.0, min=0.0,
                 help="Seconds between start-up connection attempts."),
    cfg.IntOpt("connect_timeout", default=10, min=1,
               help="Seconds to wait for a TCP connection to a MySQL/MariaDB server."),
    cfg.IntOpt("query_timeout", default=60, min=1,
               help="Seconds to wait for a MySQL/MariaDB server to answer one read or "
                    "write on the socket (PyMySQL read_timeout/write_timeout), so a "
                    "hung server cannot stall a pass forever."),
    cfg.StrOpt("read_only", default="auto",
               choices=[("auto", "decide from the account's grants (MySQL/MariaDB) or the "
                                 "file's permissions (SQLite), at each pass that would "
                                 "write"),
                        ("true", "never write to Nova's DB: reclaim is off"),
                        ("false", "do not check: reclaims write, and a write the account "
                                  "may not make fails as a failed action")],
               help="Whether the reaper may write to Nova's DB. Only a reclaim writes "
                    "(the conditional claim of the instances row, its reaper_claim marker "
                    "in instance_system_metadata, and finalize's soft delete of the row "
                    "and its dependent rows); audits and every reap that does not reclaim "
                    "(evacuated and running-deleted guests, instance directories, VIFs, "
                    "iSCSI sessions) only read, so an account holding only the read "
                    "grants (reaper-manage db-grants prints them) runs them all. "
                    "Read-only, reclaimable instances and this host's stranded claims "
                    "are reported with action 'log' and the reason, never claimed, "
                    "released or finalized, and a journaled reclaim is not resumed (it "
                    "waits, reported as held_read_only, until the DB may be written "
                    "again). 'auto' asks at each pass that has such a write to do: on "
                    "MySQL/MariaDB, SHOW GRANTS must cover every privilege of "
                    "reaper-manage db-grants --reclaim (all of them, so that no reclaim "
                    "starts that could not be finished), else the DB counts as "
                    "read-only; on SQLite, the file and its directory must be writable; "
                    "any other database counts as read-only. Grants that come through a "
                    "role are not seen by 'auto': set 'false' then. "
                    "reaper-manage db-grants --check shows what the account holds and "
                    "what 'auto' decides."),
]

api_database_opts = [
    cfg.StrOpt("connection", secret=True,
               help="SQLAlchemy URL of Nova's API database (nova_api), spelled as in "
                    "nova.conf so that the same section can be copied here. The reaper "
                    "never connects to it, whether it is set or not, because Nova's own "
                    "reclaim leaves the API database untouched: nova-compute's "
                    "_reclaim_queued_deletes -> _delete_instance -> instance_destroy "
                    "writes only the cell database; the instance's instance_mappings "
                    "row keeps queued_for_delete = true (set by nova-api when the "
                    "instance was soft-deleted) and, like its request_specs row, is "
                    "removed only when `nova-manage db archive_deleted_rows` archives "
                    "the deleted instance. A reclaim by the reaper leaves it exactly so, "
                    "and needs no grant on the API database."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(database_opts, group="database")
    conf.register_opts(api_database_opts, group="api_database")


def list_opts():
    return [("database", database_opts), ("api_database", api_database_opts)]
