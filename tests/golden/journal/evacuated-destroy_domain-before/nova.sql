BEGIN TRANSACTION;
CREATE TABLE block_device_mapping (
	id INTEGER NOT NULL, 
	instance_uuid VARCHAR(36), 
	uuid VARCHAR(36), 
	source_type VARCHAR(255), 
	destination_type VARCHAR(255), 
	guest_format VARCHAR(255), 
	device_type VARCHAR(255), 
	disk_bus VARCHAR(255), 
	boot_index INTEGER, 
	device_name VARCHAR(255), 
	delete_on_termination BOOLEAN, 
	snapshot_id VARCHAR(36), 
	volume_id VARCHAR(36), 
	volume_size INTEGER, 
	volume_type VARCHAR(255), 
	image_id VARCHAR(36), 
	no_device BOOLEAN, 
	connection_info TEXT, 
	tag VARCHAR(255), 
	attachment_id VARCHAR(36), 
	encrypted BOOLEAN, 
	encryption_secret_uuid VARCHAR(36), 
	encryption_format VARCHAR(128), 
	encryption_options VARCHAR(4096), 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	CONSTRAINT uniq_block_device_mapping0uuid UNIQUE (uuid), 
	FOREIGN KEY(instance_uuid) REFERENCES instances (uuid)
);
INSERT INTO "block_device_mapping" VALUES(1,'470b9805-d2d6-4877-bdc5-9a3ad035d259','08208d09-0973-489c-bd06-143769b1dcbf','volume','volume',NULL,NULL,NULL,NULL,'/dev/vdb',0,NULL,'3d7c95f9-e5f0-407e-85a5-6d7e5dbbb7ce',NULL,NULL,NULL,NULL,'{"driver_volume_type": "iscsi", "data": {}}',NULL,NULL,0,NULL,NULL,NULL,NULL,NULL,NULL,0);
INSERT INTO "block_device_mapping" VALUES(2,'2cb7362c-74f2-42ed-8327-79eeacca7f0d','ec9cce6f-8892-43ce-9270-dee2a86b8a6e','volume','volume',NULL,NULL,NULL,NULL,'/dev/vdb',1,NULL,'9b4f32af-d167-433a-8d19-19a07f216822',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,NULL,NULL,NULL,NULL,NULL,NULL,0);
CREATE TABLE compute_nodes (
	id INTEGER NOT NULL, 
	service_id INTEGER, 
	host VARCHAR(255), 
	uuid VARCHAR(36), 
	vcpus INTEGER NOT NULL, 
	memory_mb INTEGER NOT NULL, 
	local_gb INTEGER NOT NULL, 
	vcpus_used INTEGER NOT NULL, 
	memory_mb_used INTEGER NOT NULL, 
	local_gb_used INTEGER NOT NULL, 
	hypervisor_type TEXT NOT NULL, 
	hypervisor_version INTEGER NOT NULL, 
	hypervisor_hostname VARCHAR(255), 
	cpu_info TEXT NOT NULL, 
	host_ip VARCHAR(39), 
	stats TEXT, 
	mapped INTEGER, 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	CONSTRAINT uniq_compute_nodes0host0hypervisor_hostname0deleted UNIQUE (host, hypervisor_hostname, deleted)
);
INSERT INTO "compute_nodes" VALUES(1,NULL,'demo-compute-1','a7298c66-10a3-4558-b850-36de6f9fb997',8,16384,100,0,0,0,'QEMU',8002000,'demo-compute-1','{}',NULL,'{}',0,NULL,NULL,NULL,0);
CREATE TABLE console_auth_tokens (
	created_at DATETIME, 
	updated_at DATETIME, 
	id INTEGER NOT NULL, 
	token_hash VARCHAR(255) NOT NULL, 
	console_type VARCHAR(255) NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	port INTEGER NOT NULL, 
	tls_port INTEGER, 
	internal_access_path VARCHAR(255), 
	instance_uuid VARCHAR(36) NOT NULL, 
	expires INTEGER NOT NULL, 
	access_url_base VARCHAR(255), 
	PRIMARY KEY (id), 
	CONSTRAINT uniq_console_auth_tokens0token_hash UNIQUE (token_hash)
);
CREATE TABLE instance_extra (
	id INTEGER NOT NULL, 
	instance_uuid VARCHAR(36) NOT NULL, 
	device_metadata TEXT, 
	numa_topology TEXT, 
	pci_requests TEXT, 
	flavor TEXT, 
	vcpu_model TEXT, 
	migration_context TEXT, 
	keypairs TEXT, 
	trusted_certs TEXT, 
	resources TEXT, 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	FOREIGN KEY(instance_uuid) REFERENCES instances (uuid)
);
CREATE TABLE instance_faults (
	id INTEGER NOT NULL, 
	instance_uuid VARCHAR(36), 
	code INTEGER NOT NULL, 
	message VARCHAR(255), 
	details TEXT, 
	host VARCHAR(255), 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	FOREIGN KEY(instance_uuid) REFERENCES instances (uuid)
);
CREATE TABLE instance_id_mappings (
	id INTEGER NOT NULL, 
	uuid VARCHAR(36) NOT NULL, 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id)
);
CREATE TABLE instance_info_caches (
	id INTEGER NOT NULL, 
	network_info TEXT, 
	instance_uuid VARCHAR(36) NOT NULL, 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	CONSTRAINT uniq_instance_info_caches0instance_uuid UNIQUE (instance_uuid), 
	FOREIGN KEY(instance_uuid) REFERENCES instances (uuid)
);
INSERT INTO "instance_info_caches" VALUES(1,'[{"id": "62694646-2651-4637-94b9-1c79dae98554", "address": "fa:16:3e:00:00:01", "type": "ovs"}]','2cb7362c-74f2-42ed-8327-79eeacca7f0d',NULL,NULL,NULL,0);
CREATE TABLE instance_metadata (
	id INTEGER NOT NULL, 
	"key" VARCHAR(255), 
	value VARCHAR(255), 
	instance_uuid VARCHAR(36), 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	FOREIGN KEY(instance_uuid) REFERENCES instances (uuid)
);
CREATE TABLE instance_system_metadata (
	id INTEGER NOT NULL, 
	"key" VARCHAR(255) NOT NULL, 
	value VARCHAR(255), 
	instance_uuid VARCHAR(36) NOT NULL, 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	FOREIGN KEY(instance_uuid) REFERENCES instances (uuid)
);
CREATE TABLE instances (
	id INTEGER NOT NULL, 
	user_id VARCHAR(255), 
	project_id VARCHAR(255), 
	image_ref VARCHAR(255), 
	kernel_id VARCHAR(255), 
	ramdisk_id VARCHAR(255), 
	hostname VARCHAR(255), 
	launch_index INTEGER, 
	key_name VARCHAR(255), 
	key_data TEXT, 
	power_state INTEGER, 
	vm_state VARCHAR(255), 
	task_state VARCHAR(255), 
	memory_mb INTEGER, 
	vcpus INTEGER, 
	root_gb INTEGER, 
	ephemeral_gb INTEGER, 
	ephemeral_key_uuid VARCHAR(36), 
	host VARCHAR(255), 
	node VARCHAR(255), 
	compute_id BIGINT, 
	instance_type_id INTEGER, 
	user_data TEXT, 
	reservation_id VARCHAR(255), 
	launched_at DATETIME, 
	terminated_at DATETIME, 
	availability_zone VARCHAR(255), 
	display_name VARCHAR(255), 
	display_description VARCHAR(255), 
	launched_on TEXT, 
	locked BOOLEAN, 
	locked_by VARCHAR(5), 
	os_type VARCHAR(255), 
	architecture VARCHAR(255), 
	vm_mode VARCHAR(255), 
	uuid VARCHAR(36) NOT NULL, 
	root_device_name VARCHAR(255), 
	default_ephemeral_device VARCHAR(255), 
	default_swap_device VARCHAR(255), 
	config_drive VARCHAR(255), 
	access_ip_v4 VARCHAR(39), 
	access_ip_v6 VARCHAR(39), 
	auto_disk_config BOOLEAN, 
	progress INTEGER, 
	shutdown_terminate BOOLEAN, 
	disable_terminate BOOLEAN, 
	cell_name VARCHAR(255), 
	cleaned INTEGER, 
	hidden BOOLEAN, 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	CONSTRAINT uniq_instances0uuid UNIQUE (uuid)
);
INSERT INTO "instances" VALUES(1,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,'active',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-1','demo-compute-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'7b89296c-6dcb-4c50-8857-7eb1924770d3',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423644',NULL,NULL,0);
INSERT INTO "instances" VALUES(2,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,4,'stopped',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-1','demo-compute-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-2',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'766bad07-34c2-4a80-83cc-0f2793fdcab8',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423658',NULL,NULL,0);
INSERT INTO "instances" VALUES(3,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,'active',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-1','demo-compute-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-3',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'470b9805-d2d6-4877-bdc5-9a3ad035d259',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423662',NULL,NULL,0);
INSERT INTO "instances" VALUES(4,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,'active',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-2','demo-compute-2',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-4',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'08ceac39-2904-4def-8f84-b683a749f9c5',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423666',NULL,NULL,0);
INSERT INTO "instances" VALUES(5,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,'resized',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-2','demo-compute-2',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-5',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'137a9777-53e8-4b43-bd76-3fb9854a9657',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423670',NULL,NULL,0);
INSERT INTO "instances" VALUES(6,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,'active',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-2','demo-compute-2',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-6',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'bedc25e6-f3eb-4f12-b3d0-6f863fffc830',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423673',NULL,NULL,0);
INSERT INTO "instances" VALUES(7,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,'deleted',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-1','demo-compute-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-7',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'6b9f15c4-0b68-4c1c-9c74-e45eff1e5bef',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423679',NULL,'2026-11-28 11:45:52.421983',7);
INSERT INTO "instances" VALUES(8,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,'deleted',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-1','demo-compute-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-8',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'5ae6a228-9a6a-4329-a381-23e5dc338383',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423683',NULL,'2026-11-30 11:45:22.421983',8);
INSERT INTO "instances" VALUES(10,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,4,'soft-delete',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-1','demo-compute-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-10',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'2cb7362c-74f2-42ed-8327-79eeacca7f0d',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423687',NULL,'2026-11-28 11:45:52.421983',0);
INSERT INTO "instances" VALUES(11,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,4,'soft-delete',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-1','demo-compute-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-11',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'5cd2875e-a96e-42b3-8d98-4bffaf949e5e',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423697',NULL,'2026-11-30 11:45:22.421983',0);
INSERT INTO "instances" VALUES(12,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,'soft-delete',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-1','demo-compute-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-12',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'dc2c2e2c-c491-44d0-b4f9-42cb220adb0a',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423700',NULL,NULL,0);
INSERT INTO "instances" VALUES(13,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,'deleted',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-1','demo-compute-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-13',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'708cc1b6-f829-429f-bd48-06c2fb7f6f5d',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423703',NULL,'2026-11-28 11:45:52.421983',13);
INSERT INTO "instances" VALUES(14,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,'active',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-1','demo-compute-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-14',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'953b00b0-0b54-4a22-a00f-ecc19d02fc90',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423706',NULL,NULL,0);
INSERT INTO "instances" VALUES(15,'demo-user','demo-project',NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,'deleted',NULL,NULL,NULL,NULL,NULL,NULL,'demo-compute-1','demo-compute-1',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'vm-15',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'31e875ba-224c-4601-bc53-d0e30109c207',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,NULL,0,0,'2026-11-27 11:45:52.423708',NULL,'2026-11-28 11:45:52.421983',15);
CREATE TABLE migrations (
	id INTEGER NOT NULL, 
	source_compute VARCHAR(255), 
	dest_compute VARCHAR(255), 
	source_node VARCHAR(255), 
	dest_node VARCHAR(255), 
	dest_compute_id BIGINT, 
	dest_host VARCHAR(255), 
	old_instance_type_id INTEGER, 
	new_instance_type_id INTEGER, 
	instance_uuid VARCHAR(36), 
	uuid VARCHAR(36), 
	status VARCHAR(255), 
	migration_type VARCHAR(14), 
	hidden BOOLEAN, 
	cross_cell_move BOOLEAN, 
	user_id VARCHAR(255), 
	project_id VARCHAR(255), 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	FOREIGN KEY(instance_uuid) REFERENCES instances (uuid)
);
INSERT INTO "migrations" VALUES(1,'demo-compute-1','demo-compute-2','demo-compute-1','demo-compute-2',NULL,NULL,NULL,NULL,'08ceac39-2904-4def-8f84-b683a749f9c5','807da245-d814-4575-931e-c56c95a4d257','done','evacuation',0,0,NULL,NULL,NULL,NULL,NULL,0);
INSERT INTO "migrations" VALUES(2,'demo-compute-1','demo-compute-2','demo-compute-1','demo-compute-2',NULL,NULL,NULL,NULL,'137a9777-53e8-4b43-bd76-3fb9854a9657','f843bdb8-396b-483a-9798-c9cf280b11fd','finished','resize',0,0,NULL,NULL,NULL,NULL,NULL,0);
CREATE TABLE security_group_instance_association (
	id INTEGER NOT NULL, 
	security_group_id INTEGER, 
	instance_uuid VARCHAR(36), 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	FOREIGN KEY(instance_uuid) REFERENCES instances (uuid)
);
CREATE TABLE services (
	id INTEGER NOT NULL, 
	uuid VARCHAR(36), 
	host VARCHAR(255), 
	binary VARCHAR(255), 
	topic VARCHAR(255), 
	report_count INTEGER NOT NULL, 
	disabled BOOLEAN, 
	disabled_reason VARCHAR(255), 
	last_seen_up DATETIME, 
	forced_down BOOLEAN, 
	version INTEGER, 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	CONSTRAINT uniq_services0host0topic0deleted UNIQUE (host, topic, deleted), 
	CONSTRAINT uniq_services0host0binary0deleted UNIQUE (host, binary, deleted)
);
INSERT INTO "services" VALUES(1,NULL,'demo-compute-1','nova-compute','compute',1,0,NULL,NULL,0,0,NULL,NULL,NULL,0);
CREATE TABLE shadow_instances (
	id INTEGER NOT NULL, 
	user_id VARCHAR(255), 
	project_id VARCHAR(255), 
	image_ref VARCHAR(255), 
	kernel_id VARCHAR(255), 
	ramdisk_id VARCHAR(255), 
	hostname VARCHAR(255), 
	launch_index INTEGER, 
	key_name VARCHAR(255), 
	key_data TEXT, 
	power_state INTEGER, 
	vm_state VARCHAR(255), 
	task_state VARCHAR(255), 
	memory_mb INTEGER, 
	vcpus INTEGER, 
	root_gb INTEGER, 
	ephemeral_gb INTEGER, 
	ephemeral_key_uuid VARCHAR(36), 
	host VARCHAR(255), 
	node VARCHAR(255), 
	compute_id BIGINT, 
	instance_type_id INTEGER, 
	user_data TEXT, 
	reservation_id VARCHAR(255), 
	launched_at DATETIME, 
	terminated_at DATETIME, 
	availability_zone VARCHAR(255), 
	display_name VARCHAR(255), 
	display_description VARCHAR(255), 
	launched_on TEXT, 
	locked BOOLEAN, 
	locked_by VARCHAR(5), 
	os_type VARCHAR(255), 
	architecture VARCHAR(255), 
	vm_mode VARCHAR(255), 
	uuid VARCHAR(36) NOT NULL, 
	root_device_name VARCHAR(255), 
	default_ephemeral_device VARCHAR(255), 
	default_swap_device VARCHAR(255), 
	config_drive VARCHAR(255), 
	access_ip_v4 VARCHAR(39), 
	access_ip_v6 VARCHAR(39), 
	auto_disk_config BOOLEAN, 
	progress INTEGER, 
	shutdown_terminate BOOLEAN, 
	disable_terminate BOOLEAN, 
	cell_name VARCHAR(255), 
	cleaned INTEGER, 
	hidden BOOLEAN, 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id)
);
CREATE TABLE tags (
	resource_id VARCHAR(36) NOT NULL, 
	tag VARCHAR(80) NOT NULL, 
	PRIMARY KEY (resource_id, tag)
);
CREATE TABLE virtual_interfaces (
	id INTEGER NOT NULL, 
	address VARCHAR(255), 
	network_id INTEGER, 
	instance_uuid VARCHAR(36), 
	uuid VARCHAR(36), 
	tag VARCHAR(255), 
	created_at DATETIME, 
	updated_at DATETIME, 
	deleted_at DATETIME, 
	deleted INTEGER, 
	PRIMARY KEY (id), 
	CONSTRAINT uniq_virtual_interfaces0address0deleted UNIQUE (address, deleted), 
	FOREIGN KEY(instance_uuid) REFERENCES instances (uuid)
);
CREATE INDEX instances_host_deleted_cleaned_idx ON instances (host, deleted, cleaned);
CREATE INDEX instances_host_node_deleted_idx ON instances (host, node, deleted);
CREATE INDEX instances_task_state_updated_at_idx ON instances (task_state, updated_at);
CREATE INDEX instances_uuid_deleted_idx ON instances (uuid, deleted);
CREATE UNIQUE INDEX services_uuid_idx ON services (uuid);
CREATE UNIQUE INDEX compute_nodes_uuid_idx ON compute_nodes (uuid);
CREATE INDEX ix_instance_id_mappings_uuid ON instance_id_mappings (uuid);
CREATE INDEX tags_tag_idx ON tags (tag);
CREATE INDEX console_auth_tokens_token_hash_instance_uuid_idx ON console_auth_tokens (token_hash, instance_uuid);
CREATE INDEX console_auth_tokens_instance_uuid_idx ON console_auth_tokens (instance_uuid);
CREATE INDEX console_auth_tokens_host_expires_idx ON console_auth_tokens (host, expires);
CREATE INDEX migrations_by_src_host_nodes_and_status_idx ON migrations (deleted, source_compute, source_node, status);
CREATE INDEX migrations_by_dest_host_nodes_and_status_idx ON migrations (deleted, dest_compute, dest_node, status);
CREATE INDEX migrations_instance_uuid_and_status_idx ON migrations (deleted, instance_uuid, status);
CREATE INDEX migrations_by_host_nodes_and_status_idx ON migrations (deleted, source_compute, dest_compute, source_node, dest_node, status);
CREATE UNIQUE INDEX migrations_uuid ON migrations (uuid);
CREATE INDEX block_device_mapping_instance_uuid_idx ON block_device_mapping (instance_uuid);
CREATE INDEX volume_id ON block_device_mapping (volume_id);
CREATE INDEX block_device_mapping_instance_uuid_volume_id_idx ON block_device_mapping (instance_uuid, volume_id);
CREATE INDEX instance_extra_idx ON instance_extra (instance_uuid);
CREATE INDEX instance_uuid ON instance_system_metadata (instance_uuid);
CREATE INDEX instance_metadata_instance_uuid_idx ON instance_metadata (instance_uuid);
CREATE INDEX instance_faults_instance_uuid_deleted_created_at_idx ON instance_faults (instance_uuid, deleted, created_at);
CREATE INDEX instance_faults_host_idx ON instance_faults (host);
CREATE INDEX security_group_instance_association_instance_uuid_idx ON security_group_instance_association (instance_uuid);
CREATE INDEX virtual_interfaces_instance_uuid_fkey ON virtual_interfaces (instance_uuid);
COMMIT;
