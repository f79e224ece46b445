"""The slice of Nova's main DB schema the reaper reads and writes, in SQLAlchemy Core.

Names, types and indexes follow nova/db/main/models.py so the reaper runs
unchanged against a real Nova database; ``create_all`` builds the same slice for
tests, the demo and the benchmark. Columns the reaper never touches on tables it
only reads are left out (a Core select names its columns, so that is harmless).
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

metadata = sa.MetaData()


def MediumText():
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql")


def IPAddress():
    return sa.String(39)


def _nova_base():
    """TimestampMixin + SoftDeleteMixin columns every Nova table carries."""
    return [
        sa.Column("created_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("deleted_at", sa.DateTime),
        sa.Column("deleted", sa.Integer, default=0),
    ]


def _instances_columns():
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(255)),
        sa.Column("project_id", sa.String(255)),
        sa.Column("image_ref", sa.String(255)),
        sa.Column("kernel_id", sa.String(255)),
        sa.Column("ramdisk_id", sa.String(255)),
        sa.Column("hostname", sa.String(255)),
        sa.Column("launch_index", sa.Integer),
        sa.Column("key_name", sa.String(255)),
        sa.Column("key_data", MediumText()),
        sa.Column("power_state", sa.Integer),
        sa.Column("vm_state", sa.String(255)),
        sa.Column("task_state", sa.String(255)),
        sa.Column("memory_mb", sa.Integer),
        sa.Column("vcpus", sa.Integer),
        sa.Column("root_gb", sa.Integer),
        sa.Column("ephemeral_gb", sa.Integer),
        sa.Column("ephemeral_key_uuid", sa.String(36)),
        sa.Column("host", sa.String(255)),
        sa.Column("node", sa.String(255)),
        sa.Column("compute_id", sa.BigInteger),
        sa.Column("instance_type_id", sa.Integer),
        sa.Column("user_data", MediumText()),
        sa.Column("reservation_id", sa.String(255)),
        sa.Column("launched_at", sa.DateTime),
        sa.Column("terminated_at", sa.DateTime),
        sa.Column("availability_zone", sa.String(255)),
        sa.Column("display_name", sa.String(255)),
        sa.Column("display_description", sa.String(255)),
        sa.Column("launched_on", MediumText()),
        sa.Column("locked", sa.Boolean),
        sa.Column("locked_by", sa.Enum("owner", "admin", name="instances0locked_by")),
        sa.Column("os_type", sa.String(255)),
        sa.Column("architecture", sa.String(255)),
        sa.Column("vm_mode", sa.String(255)),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("root_device_name", sa.String(255)),
        sa.Column("default_ephemeral_device", sa.String(255)),
        sa.Column("default_swap_device", sa.String(255)),
        sa.Column("config_drive", sa.String(255)),
        sa.Column("access_ip_v4", IPAddress()),
        sa.Column("access_ip_v6", IPAddress()),
        sa.Column("auto_disk_config", sa.Boolean),
        sa.Column("progress", sa.Integer),
        sa.Column("shutdown_terminate", sa.Boolean, default=False),
        sa.Column("disable_terminate", sa.Boolean, default=False),
        sa.Column("cell_name", sa.String(255)),
        sa.Column("cleaned", sa.Integer, default=0),
        sa.Column("hidden", sa.Boolean, default=False),
        *_nova_base(),
    ]


instances = sa.Table(
    "instances", metadata,
    *_instances_columns(),
    sa.Index("instances_uuid_deleted_idx", "uuid", "deleted"),
    sa.Index("instances_host_node_deleted_idx", "host", "node", "deleted"),
    sa.Index("instances_host_deleted_cleaned_idx", "host", "deleted", "cleaned"),
    sa.Index("instances_task_state_updated_at_idx", "task_state", "updated_at"),
    sa.UniqueConstraint("uuid", name="uniq_instances0uuid"),
)

# Rows archived by `nova-manage db archive_deleted_rows` move here, same columns.
shadow_instances = sa.Table(
    "shadow_instances", metadata,
    *_instances_columns(),
)

services = sa.Table(
    "services", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("uuid", sa.String(36), nullable=True),
    sa.Column("host", sa.String(255)),
    sa.Column("binary", sa.String(255)),
    sa.Column("topic", sa.String(255)),
    sa.Column("report_count", sa.Integer, nullable=False, default=0),
    sa.Column("disabled", sa.Boolean, default=False),
    sa.Column("disabled_reason", sa.String(255)),
    sa.Column("last_seen_up", sa.DateTime, nullable=True),
    sa.Column("forced_down", sa.Boolean, default=False),
    sa.Column("version", sa.Integer, default=0),
    *_nova_base(),
    sa.UniqueConstraint("host", "topic", "deleted", name="uniq_services0host0topic0deleted"),
    sa.UniqueConstraint("host", "binary", "deleted", name="uniq_services0host0binary0deleted"),
    sa.Index("services_uuid_idx", "uuid", unique=True),
)

compute_nodes = sa.Table(
    "compute_nodes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("service_id", sa.Integer, nullable=True),
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("uuid", sa.String(36), nullable=True),
    sa.Column("vcpus", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("local_gb", sa.Integer, nullable=False),
    sa.Column("vcpus_used", sa.Integer, nullable=False),
    sa.Column("memory_mb_used", sa.Integer, nullable=False),
    sa.Column("local_gb_used", sa.Integer, nullable=False),
    sa.Column("hypervisor_type", MediumText(), nullable=False),
    sa.Column("hypervisor_version", sa.Integer, nullable=False),
    sa.Column("hypervisor_hostname", sa.String(255)),
    sa.Column("cpu_info", MediumText(), nullable=False),
    sa.Column("host_ip", IPAddress()),
    sa.Column("stats", sa.Text, default="{}"),
    sa.Column("mapped", sa.Integer, nullable=True, default=0),
    *_nova_base(),
    sa.Index("compute_nodes_uuid_idx", "uuid", unique=True),
    sa.UniqueConstraint("host", "hypervisor_hostname", "deleted",
                        name="uniq_compute_nodes0host0hypervisor_hostname0deleted"),
)

migrations = sa.Table(
    "migrations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, nullable=False),
    sa.Column("source_compute", sa.String(255)),
    sa.Column("dest_compute", sa.String(255)),
    sa.Column("source_node", sa.String(255)),
    sa.Column("dest_node", sa.String(255)),
    sa.Column("dest_compute_id", sa.BigInteger),
    sa.Column("dest_host", sa.String(255)),
    sa.Column("old_instance_type_id", sa.Integer),
    sa.Column("new_instance_type_id", sa.Integer),
    sa.Column("instance_uuid", sa.String(36), sa.ForeignKey("instances.uuid")),
    sa.Column("uuid", sa.String(36), nullable=True),
    sa.Column("status", sa.String(255)),
    sa.Column("migration_type", sa.Enum("migration", "resize", "live-migration", "evacuation",
                                        name="migration_type"), nullable=True),
    sa.Column("hidden", sa.Boolean, default=False),
    sa.Column("cross_cell_move", sa.Boolean, default=False),
    sa.Column("user_id", sa.String(255), nullable=True),
    sa.Column("project_id", sa.String(255), nullable=True),
    *_nova_base(),
    sa.Index("migrations_instance_uuid_and_status_idx", "deleted", "instance_uuid", "status"),
    # Nova indexes the leftmost 100 characters of the host/node columns on MySQL
    # (the full key would exceed InnoDB's 3072-byte limit).
    sa.Index("migrations_by_host_nodes_and_status_idx", "deleted", "source_compute",
             "dest_compute", "source_node", "dest_node", "status",
             mysql_length={"source_compute": 100, "dest_compute": 100,
                           "source_node": 100, "dest_node": 100}),
    sa.Index("migrations_by_src_host_nodes_and_status_idx", "deleted", "source_compute",
             "source_node", "status"),
    sa.Index("migrations_by_dest_host_nodes_and_status_idx", "deleted", "dest_compute",
             "dest_node", "status"),
    sa.Index("migrations_uuid", "uuid", unique=True),
)

block_device_mapping = sa.Table(
    "block_device_mapping", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_uuid", sa.String(36), sa.ForeignKey("instances.uuid")),
    sa.Column("uuid", sa.String(36)),
    sa.Column("source_type", sa.String(255)),
    sa.Column("destination_type", sa.String(255)),
    sa.Column("guest_format", sa.String(255)),
    sa.Column("device_type", sa.String(255)),
    sa.Column("disk_bus", sa.String(255)),
    sa.Column("boot_index", sa.Integer),
    sa.Column("device_name", sa.String(255)),
    sa.Column("delete_on_termination", sa.Boolean, default=False),
    sa.Column("snapshot_id", sa.String(36)),
    sa.Column("volume_id", sa.String(36)),
    sa.Column("volume_size", sa.Integer),
    sa.Column("volume_type", sa.String(255)),
    sa.Column("image_id", sa.String(36)),
    sa.Column("no_device", sa.Boolean),
    sa.Column("connection_info", MediumText()),
    sa.Column("tag", sa.String(255)),
    sa.Column("attachment_id", sa.String(36)),
    sa.Column("encrypted", sa.Boolean, default=False),
    sa.Column("encryption_secret_uuid", sa.String(36)),
    sa.Column("encryption_format", sa.String(128)),
    sa.Column("encryption_options", sa.String(4096)),
    *_nova_base(),
    sa.Index("volume_id", "volume_id"),
    sa.Index("block_device_mapping_instance_uuid_idx", "instance_uuid"),
    sa.Index("block_device_mapping_instance_uuid_volume_id_idx", "instance_uuid", "volume_id"),
    sa.UniqueConstraint("uuid", name="uniq_block_device_mapping0uuid"),
)

instance_info_caches = sa.Table(
    "instance_info_caches", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("network_info", MediumText()),
    sa.Column("instance_uuid", sa.String(36), sa.ForeignKey("instances.uuid"), nullable=False),
    *_nova_base(),
    sa.UniqueConstraint("instance_uuid", name="uniq_instance_info_caches0instance_uuid"),
)

instance_extra = sa.Table(
    "instance_extra", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_uuid", sa.String(36), sa.ForeignKey("instances.uuid"), nullable=False),
    sa.Column("device_metadata", sa.Text),
    sa.Column("numa_topology", sa.Text),
    sa.Column("pci_requests", sa.Text),
    sa.Column("flavor", sa.Text),
    sa.Column("vcpu_model", sa.Text),
    sa.Column("migration_context", sa.Text),
    sa.Column("keypairs", sa.Text),
    sa.Column("trusted_certs", sa.Text),
    sa.Column("resources", sa.Text),
    *_nova_base(),
    sa.Index("instance_extra_idx", "instance_uuid"),
)

instance_system_metadata = sa.Table(
    "instance_system_metadata", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("value", sa.String(255)),
    sa.Column("instance_uuid", sa.String(36), sa.ForeignKey("instances.uuid"), nullable=False),
    *_nova_base(),
    sa.Index("instance_uuid", "instance_uuid"),
)

instance_metadata = sa.Table(
    "instance_metadata", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key", sa.String(255)),
    sa.Column("value", sa.String(255)),
    sa.Column("instance_uuid", sa.String(36), sa.ForeignKey("instances.uuid")),
    *_nova_base(),
    sa.Index("instance_metadata_instance_uuid_idx", "instance_uuid"),
)

instance_faults = sa.Table(
    "instance_faults", metadata,
    sa.Column("id", sa.Integer, primary_key=True, nullable=False),
    sa.Column("instance_uuid", sa.String(36), sa.ForeignKey("instances.uuid")),
    sa.Column("code", sa.Integer, nullable=False),
    sa.Column("message", sa.String(255)),
    sa.Column("details", MediumText()),
    sa.Column("host", sa.String(255)),
    *_nova_base(),
    sa.Index("instance_faults_host_idx", "host"),
    sa.Index("instance_faults_instance_uuid_deleted_created_at_idx",
             "instance_uuid", "deleted", "created_at"),
)

security_group_instance_association = sa.Table(
    "security_group_instance_association", metadata,
    sa.Column("id", sa.Integer, primary_key=True, nullable=False),
    sa.Column("security_group_id", sa.Integer),
    sa.Column("instance_uuid", sa.String(36), sa.ForeignKey("instances.uuid")),
    *_nova_base(),
    sa.Index("security_group_instance_association_instance_uuid_idx", "instance_uuid"),
)

virtual_interfaces = sa.Table(
    "virtual_interfaces", metadata,
    sa.Column("id", sa.Integer, primary_key=True, nullable=False),
    sa.Column("address", sa.String(255)),
    sa.Column("network_id", sa.Integer),
    sa.Column("instance_uuid", sa.String(36), sa.ForeignKey("instances.uuid")),
    sa.Column("uuid", sa.String(36)),
    sa.Column("tag", sa.String(255)),
    *_nova_base(),
    sa.UniqueConstraint("address", "deleted", name="uniq_virtual_interfaces0address0deleted"),
    sa.Index("virtual_interfaces_instance_uuid_fkey", "instance_uuid"),
)

# The EC2 id mapping keys on ``uuid`` (the instance's), not ``instance_uuid``.
instance_id_mappings = sa.Table(
    "instance_id_mappings", metadata,
    sa.Column("id", sa.Integer, primary_key=True, nullable=False, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False),
    *_nova_base(),
    sa.Index("ix_instance_id_mappings_uuid", "uuid"),
)

# Tags have no ``deleted`` column (nor any timestamp): instance_destroy hard-deletes them.
tags = sa.Table(
    "tags", metadata,
    sa.Column("resource_id", sa.String(36), primary_key=True, nullable=False),
    sa.Column("tag", sa.Unicode(80), primary_key=True, nullable=False),
    sa.Index("tags_tag_idx", "tag"),
)

# Console tokens: TimestampMixin only (no ``deleted``); hard-deleted with the instance.
console_auth_tokens = sa.Table(
    "console_auth_tokens", metadata,
    sa.Column("created_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime),
    sa.Column("id", sa.Integer, primary_key=True, nullable=False),
    sa.Column("token_hash", sa.String(255), nullable=False),
    sa.Column("console_type", sa.String(255), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("tls_port", sa.Integer, nullable=True),
    sa.Column("internal_access_path", sa.String(255)),
    sa.Column("instance_uuid", sa.String(36), nullable=False),
    sa.Column("expires", sa.Integer, nullable=False),
    sa.Column("access_url_base", sa.String(255)),
    sa.Index("console_auth_tokens_instance_uuid_idx", "instance_uuid"),
    sa.Index("console_auth_tokens_host_expires_idx", "host", "expires"),
    sa.Index("console_auth_tokens_token_hash_instance_uuid_idx", "token_hash",
             "instance_uuid"),
    sa.UniqueConstraint("token_hash", name="uniq_console_auth_tokens0token_hash"),
)

# Dependent rows soft-deleted with the instance on reclaim (doc/design.md, "Teardown order"),
# with the column that names the instance.
DEPENDENT_TABLES: tuple[tuple[sa.Table, str], ...] = (
    (instance_info_caches, "instance_uuid"),
    (block_device_mapping, "instance_uuid"),
    (instance_system_metadata, "instance_uuid"),
    (instance_metadata, "instance_uuid"),
    (instance_extra, "instance_uuid"),
    (instance_faults, "instance_uuid"),
    (security_group_instance_association, "instance_uuid"),
    (virtual_interfaces, "instance_uuid"),
    (migrations, "instance_uuid"),
    (instance_id_mappings, "uuid"),
)


# Rows instance_destroy hard-deletes (no ``deleted`` column), with the column naming
# the instance.
HARD_DELETED_TABLES: tuple[tuple[sa.Table, str], ...] = (
    (tags, "resource_id"),
    (console_auth_tokens, "instance_uuid"),
)


def create_all(engine: sa.Engine) -> None:
    """Build the slice on an empty database (tests, demo, benchmark only)."""
    metadata.create_all(engine)
