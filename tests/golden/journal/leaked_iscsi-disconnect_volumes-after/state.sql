BEGIN TRANSACTION;
CREATE TABLE blocked_passes (
    pass_id TEXT PRIMARY KEY,
    teardown_keys TEXT NOT NULL,   -- JSON list: what the blocked plan would destroy
    created_at TEXT NOT NULL,
    approved_at TEXT,
    used_at TEXT
);
CREATE TABLE flags (
    name TEXT PRIMARY KEY,         -- e.g. 'paused' (survives a restart)
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pass_id TEXT NOT NULL,
    instance_uuid TEXT,
    plan TEXT NOT NULL,
    status TEXT NOT NULL,          -- running | done | aborted | quarantined
    attempts INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    owner TEXT                     -- JSON: pid, start, boot_id, process (reaper.procid)
);
INSERT INTO "journal" VALUES(1,'req-4fbc4010-f039-4e65-a4d0-736ba3324939','192.0.2.11:3260 iqn.2010-10.org.openstack:volume-l lun 0 (sdb)','{"action": "reap", "claim_marker": null, "classification": "leaked_iscsi", "destroy_disks": false, "dirs": [], "domain_name": null, "finalize_db": false, "findings": [], "instance_uuid": "192.0.2.11:3260 iqn.2010-10.org.openstack:volume-l lun 0 (sdb)", "reason": "LUN 0 (sdb) of this session is named by no live BDM and no domain, and neither it nor a partition of it or a device on it is open, mounted, swap or held", "service_facts": null, "services": [], "shared_storage": null, "vifs": [], "volumes": [{"device_path": "/dev/sdb", "dm": null, "keep": null, "multipath": false, "origin": "leak", "resources": ["192.0.2.11:3260 iqn.2010-10.org.openstack:volume-l lun 0 (sdb)"], "targets": [{"device": "sdb", "hctl": "3:0:0:0", "iqn": "iqn.2010-10.org.openstack:volume-l", "logout": true, "lun": 0, "node": true, "portal": "192.0.2.11:3260", "session_iqn": "iqn.2010-10.org.openstack:volume-l", "session_portal": "192.0.2.11:3260", "sid": "2", "wwid": "naa.60014058da82d8f23eaac2f5d002146"}], "volume_id": null}]}','running',1,NULL,'2026-11-30T12:26:13.322424','2026-11-30T12:26:13.322424','{"pid": 28803, "start": 2586953, "boot_id": "765c1a16-668e-4385-9b73-8c1dffd13450", "process": "reaper-manage"}');
CREATE TABLE journal_steps (
    journal_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,          -- started | done | failed
    detail TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (journal_id, step)
);
INSERT INTO "journal_steps" VALUES(1,'disconnect_volumes','started',NULL,'2026-11-30T12:26:13.323872');
CREATE TABLE observations (
    key TEXT PRIMARY KEY,
    classification TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    count INTEGER NOT NULL
);
INSERT INTO "observations" VALUES('iscsi_session:192.0.2.11:3260 iqn.2010-10.org.openstack:volume-l lun 0 (sdb)','leaked_iscsi','2026-11-30T12:26:13.312853','2026-11-30T12:26:13.312853',1);
INSERT INTO "observations" VALUES('instance:9a2e0000-0000-4000-8000-00000000000a','live','2026-11-30T12:26:13.312853','2026-11-30T12:26:13.312853',1);
CREATE INDEX journal_status_idx ON journal (status);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('journal',1);
COMMIT;
