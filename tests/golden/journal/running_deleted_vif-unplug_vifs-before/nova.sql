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
INSERT INTO "compute_nodes" VALUES(1,1,'gm2-compute','cec8f8d7-7215-4fa9-9e0b-5dd401f20b9f',8,16384,100,0,512,0,'QEMU',7002000,'gm2-compute','{"arch": "x86_64", "model": "qemu64", "vendor": "Intel"}','127.0.0.1','{}',1,'2026-11-30 12:23:07.000000',NULL,NULL,0);
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
INSERT INTO "instance_info_caches" VALUES(1,'[{"id": "@PH@01-0100-4000-8000-000000000001", "address": "fa:16:3e:00:00:01", "type": "ovs", "devname": "tap@PH@01-01", "ovs_interfaceid": "@PH@01-0100-4000-8000-000000000001", "active": true, "details": {"ovs_hybrid_plug": true, "port_filter": true}, "network": {"bridge": "br-int", "subnets": [], "id": "f9d720b1-3b76-476a-bd2a-2010789f04b0"}}]','9a2e0000-0000-4000-8000-000000000001','2026-11-30 12:23:07.000000',NULL,NULL,0);
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
INSERT INTO "instances" VALUES(1,'u-9a2e0000','p-9a2e0000','95b84e6d-eb58-4804-80f8-c11100bf88c9',NULL,NULL,'vm-9a2e0000',0,NULL,NULL,1,'active',NULL,64,1,1,0,NULL,'gm2-compute','gm2-compute',NULL,1,NULL,'r-9a2e0000','2026-11-30 12:23:07.000000',NULL,'nova','vm-9a2e0000',NULL,'gm2-compute',0,NULL,NULL,'x86_64','hvm','9a2e0000-0000-4000-8000-000000000001','/dev/vda',NULL,NULL,NULL,NULL,NULL,NULL,0,0,0,NULL,0,0,'2026-11-29 12:23:07.000000',NULL,NULL,0);
INSERT INTO "instances" VALUES(2,'u-9a2e0000','p-9a2e0000','797aa8cf-ce83-461d-a93c-f9faf1bf1574',NULL,NULL,'vm-9a2e0000',0,NULL,NULL,0,'deleted',NULL,64,1,1,0,NULL,'gm2-compute','gm2-compute',NULL,1,NULL,'r-9a2e0000','2026-11-30 12:23:07.000000','2026-01-01 00:00:00.000000','nova','vm-9a2e0000',NULL,'gm2-compute',0,NULL,NULL,'x86_64','hvm','9a2e0000-0000-4000-8000-000000000002','/dev/vda',NULL,NULL,NULL,NULL,NULL,NULL,0,0,0,NULL,0,0,'2026-11-29 12:23:07.000000',NULL,'2026-01-01 00:00:00.000000',2);
INSERT INTO "instances" VALUES(3,'u-9a2e0000','p-9a2e0000','304ee2c2-7550-4da2-a934-4dfd781fb070',NULL,NULL,'vm-9a2e0000',0,NULL,NULL,0,'deleted',NULL,64,1,1,0,NULL,'gm2-compute','gm2-compute',NULL,1,NULL,'r-9a2e0000','2026-11-30 12:23:07.000000','2026-01-01 00:00:00.000000','nova','vm-9a2e0000',NULL,'gm2-compute',0,NULL,NULL,'x86_64','hvm','9a2e0000-0000-4000-8000-000000000004','/dev/vda',NULL,NULL,NULL,NULL,NULL,NULL,0,0,0,NULL,0,0,'2026-11-29 12:23:07.000000',NULL,'2026-01-01 00:00:00.000000',3);
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
INSERT INTO "services" VALUES(1,'2da7f2f5-e5e8-4cc6-9001-4ed0e195d2b5','gm2-compute','nova-compute','compute',1,0,NULL,'2026-11-30 12:23:07.000000',0,66,'2026-11-30 12:23:07.000000',NULL,NULL,0);
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
CREATE INDEX instances_task_state_updated_at_idx ON instances (task_state, updated_at);
CREATE INDEX instances_host_node_deleted_idx ON instances (host, node, deleted);
CREATE INDEX instances_host_deleted_cleaned_idx ON instances (host, deleted, cleaned);
CREATE INDEX instances_uuid_deleted_idx ON instances (uuid, deleted);
CREATE UNIQUE INDEX services_uuid_idx ON services (uuid);
CREATE UNIQUE INDEX compute_nodes_uuid_idx ON compute_nodes (uuid);
CREATE INDEX ix_instance_id_mappings_uuid ON instance_id_mappings (uuid);
CREATE INDEX tags_tag_idx ON tags (tag);
CREATE INDEX console_auth_tokens_instance_uuid_idx ON console_auth_tokens (instance_uuid);
CREATE INDEX console_auth_tokens_token_hash_instance_uuid_idx ON console_auth_tokens (token_hash, instance_uuid);
CREATE INDEX console_auth_tokens_host_expires_idx ON console_auth_tokens (host, expires);
CREATE INDEX migrations_instance_uuid_and_status_idx ON migrations (deleted, instance_uuid, status);
CREATE INDEX migrations_by_host_nodes_and_status_idx ON migrations (deleted, source_compute, dest_compute, source_node, dest_node, status);
CREATE UNIQUE INDEX migrations_uuid ON migrations (uuid);
CREATE INDEX migrations_by_src_host_nodes_and_status_idx ON migrations (deleted, source_compute, source_node, status);
CREATE INDEX migrations_by_dest_host_nodes_and_status_idx ON migrations (deleted, dest_compute, dest_node, status);
CREATE INDEX block_device_mapping_instance_uuid_volume_id_idx ON block_device_mapping (instance_uuid, volume_id);
CREATE INDEX volume_id ON block_device_mapping (volume_id);
CREATE INDEX block_device_mapping_instance_uuid_idx ON block_device_mapping (instance_uuid);
CREATE INDEX instance_extra_idx ON instance_extra (instance_uuid);
CREATE INDEX instance_uuid ON instance_system_metadata (instance_uuid);
CREATE INDEX instance_metadata_instance_uuid_idx ON instance_metadata (instance_uuid);
CREATE INDEX instance_faults_instance_uuid_deleted_created_at_idx ON instance_faults (instance_uuid, deleted, created_at);
CREATE INDEX instance_faults_host_idx ON instance_faults (host);
CREATE INDEX security_group_instance_association_instance_uuid_idx ON security_group_instance_association (instance_uuid);
CREATE INDEX virtual_interfaces_instance_uuid_fkey ON virtual_interfaces (instance_uuid);
COMMIT;
