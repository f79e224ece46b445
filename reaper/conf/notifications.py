"""[notifications]: Nova's delete notifications of the reaper's reclaims (reaper.nova_notify)."""
from __future__ import annotations

from oslo_config import cfg

FORMATS = [
    ("both", "the versioned and the legacy (unversioned) events"),
    ("versioned", "only the versioned events (instance.delete.start/end)"),
    ("unversioned", "only the legacy events (compute.instance.delete.start/end), as "
                    "Nova's own default"),
]
notify_opts = [
    cfg.BoolOpt("nova_delete_events", default=True,
                help="Send Nova's delete notifications for every instance the reaper "
                     "reclaims, exactly as nova-compute's own reclaim would: "
                     "instance.delete.start and instance.delete.end (versioned, publisher "
                     "nova-compute:<host>, InstanceActionPayload) and/or "
                     "compute.instance.delete.start and compute.instance.delete.end "
                     "(legacy, publisher compute.<host>, Nova's info_from_instance dict), "
                     "as notification_format says. Ceilometer and billing systems stop "
                     "charging for an instance on them. .start is sent once the reclaim "
                     "has claimed the row, before the host teardown; .end once the Nova DB "
                     "is finalized. They go through oslo.messaging's "
                     "[oslo_messaging_notifications] transport, so nothing is sent while "
                     "its driver is unset (noop): the option is on by default and takes "
                     "effect as soon as a driver (messagingv2) is configured. Sending never "
                     "holds up or fails a teardown: one delivery attempt from a worker "
                     "thread; a lost event is logged. Changing it needs a restart."),
    cfg.StrOpt("notification_format", default="unversioned", choices=FORMATS,
               help="Which of Nova's notification formats the delete events are sent in: "
                    "set it as nova-compute's [notifications] notification_format on this "
                    "host (same name, same values, same default), so that the consumers "
                    "get from the reaper's reclaims what they get from Nova's. Changing it "
                    "needs a restart."),
    cfg.StrOpt("nova_control_exchange", default="nova",
               help="The exchange the delete events are published to: Nova's control "
                    "exchange, where Ceilometer (its [DEFAULT] nova_control_exchange) and "
                    "other consumers of Nova's notifications listen. The reaper's own "
                    "events (reaper.*) stay on the reaper's exchange. Changing it needs a "
                    "restart."),
    cfg.ListOpt("versioned_notifications_topics", default=["versioned_notifications"],
                help="Topics of the versioned delete events: as nova-compute's "
                     "[notifications] versioned_notifications_topics. The legacy events go "
                     "to [oslo_messaging_notifications] topics (default 'notifications'), "
                     "as Nova's do. Changing it needs a restart."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(notify_opts, group="notifications")


def list_opts():
    return [("notifications", notify_opts)]
