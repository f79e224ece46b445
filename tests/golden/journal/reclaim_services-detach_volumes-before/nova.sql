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
INSERT INTO "block_device_mapping" VALUES(1,'@UUID@','c12cfc4e-1a7d-4e22-8456-ad6454f8b59e','volume','volume',NULL,'disk','virtio',NULL,'/dev/vdb',1,NULL,'@NEW_VOLUME@',NULL,NULL,NULL,0,'{"driver_volume_type": "iscsi", "data": {}, "serial": "@NEW_VOLUME@"}',NULL,'@ATTACHMENT_ID@',0,NULL,NULL,NULL,'2026-11-30 12:29:01.000000',NULL,NULL,0);
INSERT INTO "block_device_mapping" VALUES(2,'@UUID@','8d54fc54-b132-4053-b3ec-b8ece5d4f2ee','volume','volume',NULL,'disk','virtio',NULL,'/dev/vdc',0,NULL,'@OLD_VOLUME@',NULL,NULL,NULL,0,'{"driver_volume_type": "iscsi", "data": {"access_mode": "rw", "qos_specs": null, "encrypted": false, "cacheable": false, "enforce_multipath": false}, "enforce_multipath": false, "connector": {"platform": "x86_64", "os_type": "linux", "ip": "127.0.0.1", "host": "@HOST@", "initiator": "iqn.1993-08.org.debian:01:@HOST@", "multipath": false, "enforce_multipath": false}}',NULL,NULL,0,NULL,NULL,NULL,'2026-11-30 12:29:02.000000',NULL,NULL,0);
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
INSERT INTO "compute_nodes" VALUES(1,1,'@HOST@','@RP@',8,16384,100,0,512,0,'QEMU',7002000,'@HOST@.node','{"arch": "x86_64", "model": "qemu64", "vendor": "Intel"}','127.0.0.1','{}',1,'2026-11-30 12:28:58.000000',NULL,NULL,0);
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
INSERT INTO "instance_info_caches" VALUES(1,'[{"id": "@NOVA_PORT@", "address": "fa:16:3e:00:00:01", "type": "ovs", "devname": "tap8fe44448-fa", "ovs_interfaceid": "@NOVA_PORT@", "network": {"bridge": "br-int", "subnets": []}, "active": true}, {"id": "@PRE_PORT@", "address": "fa:16:3e:00:00:01", "type": "ovs", "devname": "tap0face8be-42", "ovs_interfaceid": "@PRE_PORT@", "network": {"bridge": "br-int", "subnets": []}, "active": true, "preserve_on_delete": true}]','@UUID@','2026-11-30 12:29:00.000000',NULL,NULL,0);
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
INSERT INTO "instance_system_metadata" VALUES(1,'reaper_claim','@HOST@:2026-11-30T12:29:03:req-b24a5c6d-0cf9-4f83-bf89-1d71c763cc3b','@UUID@','2026-11-30 12:29:03.000000',NULL,NULL,0);
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
INSERT INTO "instances" VALUES(1,'u-d69c77e8','p-d69c77e8','bd243f93-57c4-4363-8c83-7e422fc10565',NULL,NULL,'vm-d69c77e8',0,NULL,NULL,4,'soft-delete','deleting',64,1,1,0,NULL,'@HOST@','@HOST@.node',NULL,1,NULL,'r-d69c77e8','2026-11-30 12:28:58.000000',NULL,'nova','vm-d69c77e8',NULL,'@HOST@',0,NULL,NULL,'x86_64','hvm','@UUID@','/dev/vda',NULL,NULL,NULL,NULL,NULL,NULL,0,0,0,NULL,0,0,'2026-11-29 12:28:58.000000','2026-11-30 12:29:03.000000','2026-11-28 12:28:58.000000',0);
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
INSERT INTO "services" VALUES(1,'f32c0009-d199-4b95-af4b-1a62ac958d8c','@HOST@','nova-compute','compute',1,0,NULL,'2026-11-30 12:28:58.000000',0,66,'2026-11-30 12:28:58.000000',NULL,NULL,0);
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
CREATE INDEX instances_host_node_deleted_idx ON instances (host, node, deleted);
CREATE INDEX instances_task_state_updated_at_idx ON instances (task_state, updated_at);
CREATE INDEX instances_uuid_deleted_idx ON instances (uuid, deleted);
CREATE INDEX instances_host_deleted_cleaned_idx ON instances (host, deleted, cleaned);
CREATE UNIQUE INDEX services_uuid_idx ON services (uuid);
CREATE UNIQUE INDEX compute_nodes_uuid_idx ON compute_nodes (uuid);
CREATE INDEX ix_instance_id_mappings_uuid ON instance_id_mappings (uuid);
CREATE INDEX tags_tag_idx ON tags (tag);
CREATE INDEX console_auth_tokens_token_hash_instance_uuid_idx ON console_auth_tokens (token_hash, instance_uuid);
CREATE INDEX console_auth_tokens_host_expires_idx ON console_auth_tokens (host, expires);
CREATE INDEX console_auth_tokens_instance_uuid_idx ON console_auth_tokens (instance_uuid);
CREATE INDEX migrations_instance_uuid_and_status_idx ON migrations (deleted, instance_uuid, status);
CREATE INDEX migrations_by_host_nodes_and_status_idx ON migrations (deleted, source_compute, dest_compute, source_node, dest_node, status);
CREATE UNIQUE INDEX migrations_uuid ON migrations (uuid);
CREATE INDEX migrations_by_src_host_nodes_and_status_idx ON migrations (deleted, source_compute, source_node, status);
CREATE INDEX migrations_by_dest_host_nodes_and_status_idx ON migrations (deleted, dest_compute, dest_node, status);
CREATE INDEX block_device_mapping_instance_uuid_idx ON block_device_mapping (instance_uuid);
CREATE INDEX block_device_mapping_instance_uuid_volume_id_idx ON block_device_mapping (instance_uuid, volume_id);
CREATE INDEX volume_id ON block_device_mapping (volume_id);
CREATE INDEX instance_extra_idx ON instance_extra (instance_uuid);
CREATE INDEX instance_uuid ON instance_system_metadata (instance_uuid);
CREATE INDEX instance_metadata_instance_uuid_idx ON instance_metadata (instance_uuid);
CREATE INDEX instance_faults_instance_uuid_deleted_created_at_idx ON instance_faults (instance_uuid, deleted, created_at);
CREATE INDEX instance_faults_host_idx ON instance_faults (host);
CREATE INDEX security_group_instance_association_instance_uuid_idx ON security_group_instance_association (instance_uuid);
CREATE INDEX virtual_interfaces_instance_uuid_fkey ON virtual_interfaces (instance_uuid);
COMMIT;
