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
INSERT INTO "journal" VALUES(1,'req-1f182035-222a-4b89-b808-63d7836af00c','08ceac39-2904-4def-8f84-b683a749f9c5','{"action": "reap", "claim_marker": null, "classification": "evacuated", "destroy_disks": true, "dirs": ["@ROOT@/instances/08ceac39-2904-4def-8f84-b683a749f9c5"], "domain_name": "instance-00000004", "finalize_db": false, "findings": [], "instance_uuid": "08ceac39-2904-4def-8f84-b683a749f9c5", "reason": "evacuated from this host to demo-compute-2", "service_facts": null, "services": [], "shared_storage": null, "vifs": [], "volumes": []}','done',1,NULL,'2026-11-30T11:47:19.154135','2026-11-30T11:47:19.198296','{"pid": 4327, "start": 2343864, "boot_id": "765c1a16-668e-4385-9b73-8c1dffd13450", "process": "__main__.py"}');
INSERT INTO "journal" VALUES(2,'req-1f182035-222a-4b89-b808-63d7836af00c','6b9f15c4-0b68-4c1c-9c74-e45eff1e5bef','{"action": "reap", "claim_marker": null, "classification": "running_deleted", "destroy_disks": true, "dirs": ["@ROOT@/instances/6b9f15c4-0b68-4c1c-9c74-e45eff1e5bef"], "domain_name": "instance-00000007", "finalize_db": false, "findings": [], "instance_uuid": "6b9f15c4-0b68-4c1c-9c74-e45eff1e5bef", "reason": "instance is deleted in Nova but its domain is still on this host", "service_facts": null, "services": [], "shared_storage": null, "vifs": [], "volumes": []}','done',1,NULL,'2026-11-30T11:47:19.231429','2026-11-30T11:47:19.278961','{"pid": 4327, "start": 2343864, "boot_id": "765c1a16-668e-4385-9b73-8c1dffd13450", "process": "__main__.py"}');
INSERT INTO "journal" VALUES(3,'req-1f182035-222a-4b89-b808-63d7836af00c','2cb7362c-74f2-42ed-8327-79eeacca7f0d','{"action": "reclaim", "claim_marker": null, "classification": "reclaimable", "destroy_disks": true, "dirs": ["@ROOT@/instances/2cb7362c-74f2-42ed-8327-79eeacca7f0d"], "domain_name": "instance-0000000a", "finalize_db": true, "findings": [], "instance_uuid": "2cb7362c-74f2-42ed-8327-79eeacca7f0d", "reason": "soft-deleted longer than reclaim_instance_interval (3600s)", "service_facts": null, "services": [], "shared_storage": null, "vifs": [], "volumes": []}','running',1,NULL,'2026-11-30T11:47:19.437726','2026-11-30T11:47:19.437726','{"pid": 4327, "start": 2343864, "boot_id": "765c1a16-668e-4385-9b73-8c1dffd13450", "process": "__main__.py"}');
CREATE TABLE journal_steps (
    journal_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,          -- started | done | failed
    detail TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (journal_id, step)
);
INSERT INTO "journal_steps" VALUES(1,'destroy_domain','done','destroyed','2026-11-30T11:47:19.166931');
INSERT INTO "journal_steps" VALUES(1,'delete_files','done','removed 08ceac39-2904-4def-8f84-b683a749f9c5','2026-11-30T11:47:19.188744');
INSERT INTO "journal_steps" VALUES(1,'undefine_domain','done','undefined (plain)','2026-11-30T11:47:19.197396');
INSERT INTO "journal_steps" VALUES(2,'destroy_domain','done','destroyed','2026-11-30T11:47:19.244850');
INSERT INTO "journal_steps" VALUES(2,'delete_files','done','removed 6b9f15c4-0b68-4c1c-9c74-e45eff1e5bef','2026-11-30T11:47:19.272767');
INSERT INTO "journal_steps" VALUES(2,'undefine_domain','done','undefined (plain)','2026-11-30T11:47:19.278609');
INSERT INTO "journal_steps" VALUES(3,'claim','done','claimed (task_state=deleting, marker demo-compute-1:2026-11-30T11:47:19:req-1f182035-222a-4b89-b808-63d7836af00c)','2026-11-30T11:47:19.639395');
INSERT INTO "journal_steps" VALUES(3,'destroy_domain','done','already shut off','2026-11-30T11:47:19.654853');
INSERT INTO "journal_steps" VALUES(3,'delete_files','started',NULL,'2026-11-30T11:47:19.668716');
CREATE TABLE observations (
    key TEXT PRIMARY KEY,
    classification TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    count INTEGER NOT NULL
);
INSERT INTO "observations" VALUES('domain:instance-00000006','foreign','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('domain:instance-00000007','running_deleted','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('domain:instance-00000008','pending','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('domain:instance-00000005','in_flight','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('volume_attachment:instance-00000003:735c076b-8c8a-48b2-aaac-3142507a2560','attachment_drift','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('volume_attachment:instance-00000003:3d7c95f9-e5f0-407e-85a5-6d7e5dbbb7ce','attachment_drift','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('domain:instance-0000000a','reclaimable','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('domain:instance-00000004','evacuated','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('domain:instance-00000009','unknown','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('instance:dc2c2e2c-c491-44d0-b4f9-42cb220adb0a','reclaimable','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('instance_dir:@ROOT@/instances/31e875ba-224c-4601-bc53-d0e30109c207_del','interrupted_delete','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('instance_dir:@ROOT@/instances/708cc1b6-f829-429f-bd48-06c2fb7f6f5d','orphan_dir','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
INSERT INTO "observations" VALUES('instance_dir:@ROOT@/instances/953b00b0-0b54-4a22-a00f-ecc19d02fc90_resize','stale_resize','2026-11-30T11:47:19.101187','2026-11-30T11:47:19.101187',1);
CREATE INDEX journal_status_idx ON journal (status);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('journal',3);
COMMIT;
