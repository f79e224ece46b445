"""Keystone-side setup and checks of the OpenStack test stack (run by start.sh).

``catalog``: projects, users, roles, services and endpoints on top of what
``keystone-manage bootstrap`` made (admin, RegionOne, the identity endpoints),
then ``stack.json`` and ``admin-openrc`` in the state directory.
``has-pool``: exit 0 once Cinder's scheduler knows a volume pool.

Who is who (all in domain Default, one password for all):
* admin    project admin, role admin (the bootstrap admin)
* placement, neutron, cinder   project service, roles admin and service: the
  services' own users (keystonemiddleware validates tokens with them)
* reaper   project service, role service only: what reaper authenticates as, as
  Nova's [neutron]/[cinder]/[placement]/[service_user] users do; its token is
  the X-Service-Token Cinder wants before it deletes an in-use attachment
* reaper-admin   project service, roles admin and service: Cinder (29.0) has no
  policy for the service role and scopes a non-admin to its own project, so
  a Cinder client acting on other projects' volumes needs admin (the way
  Nova's own service user has it); Neutron and Placement accept ``service``
* demo     project demo, roles member and reader: an ordinary project user who
  owns the "instances'" ports and volumes
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

HOST = "127.0.0.1"


def _port(name: str, default: int) -> int:
    """The port lib.sh chose (it exports OPENSTACK_<NAME>_PORT)."""
    return int(os.environ.get(f"OPENSTACK_{name}_PORT", default))


AUTH_URL = f"http://{HOST}:{_port('KEYSTONE', 5000)}/v3"
REGION = "RegionOne"
SERVICES = [  # (name, type, url)
    ("placement", "placement", f"http://{HOST}:{_port('PLACEMENT', 8778)}"),
    ("neutron", "network", f"http://{HOST}:{_port('NEUTRON', 9696)}"),
    ("cinderv3", "block-storage", f"http://{HOST}:{_port('CINDER', 8776)}/v3"),
]
USERS = {  # name: (project, roles)
    "placement": ("service", ["admin", "service"]),
    "neutron": ("service", ["admin", "service"]),
    "cinder": ("service", ["admin", "service"]),
    "reaper": ("service", ["service"]),
    "reaper-admin": ("service", ["admin", "service"]),
    "demo": ("demo", ["member", "reader"]),
}


def admin_session(password: str) -> ks_session.Session:
    auth = v3.Password(auth_url=AUTH_URL, username="admin", password=password,
                       project_name="admin", user_domain_name="Default",
                       project_domain_name="Default")
    return ks_session.Session(auth=auth)


class Keystone:
    """Get-or-create over Keystone's v3 API with an admin session."""

    def __init__(self, sess: ks_session.Session):
        self.s = sess

    def _get(self, path: str, key: str, **query) -> list[dict]:
        return self.s.get(f"{AUTH_URL}/{path}", params=query).json()[key]

    def ensure(self, path: str, key: str, body: dict, **query) -> dict:
        found = self._get(path, key + "s", **query)
        if found:
            return found[0]
        return self.s.post(f"{AUTH_URL}/{path}", json={key: body}).json()[key]

    def grant(self, project_id: str, user_id: str, role_id: str) -> None:
        self.s.put(f"{AUTH_URL}/projects/{project_id}/users/{user_id}/roles/{role_id}")


def catalog(args) -> int:
    ks = Keystone(admin_session(args.password))
    domain = "default"
    roles = {name: ks.ensure("roles", "role", {"name": name}, name=name)["id"]
             for name in ("admin", "member", "reader", "service")}
    projects = {name: ks.ensure("projects", "project",
                                {"name": name, "domain_id": domain}, name=name)["id"]
                for name in ("admin", "service", "demo")}
    users = {}
    for name, (project, user_roles) in USERS.items():
        user = ks.ensure("users", "user", {"name": name, "domain_id": domain,
                                           "password": args.password,
                                           "default_project_id": projects[project]},
                         name=name)
        users[name] = user["id"]
        for role in user_roles:
            ks.grant(projects[project], user["id"], roles[role])
    users["admin"] = ks._get("users", "users", name="admin")[0]["id"]
    for name, stype, url in SERVICES:
        svc = ks.ensure("services", "service", {"name": name, "type": stype}, type=stype)
        for interface in ("public", "internal", "admin"):
            ks.ensure("endpoints", "endpoint",
                      {"service_id": svc["id"], "interface": interface, "url": url,
                       "region_id": REGION},
                      service_id=svc["id"], interface=interface)

    def creds(user: str, project: str) -> dict:
        return {"username": user, "password": args.password, "project_name": project,
                "user_domain_name": "Default", "project_domain_name": "Default",
                "user_id": users[user], "project_id": projects[project]}

    stack = {
        "auth_url": AUTH_URL,
        "region_name": REGION,
        "endpoints": {"identity": AUTH_URL, **{t: u for _, t, u in SERVICES}},
        "credentials": {"admin": creds("admin", "admin"),
                        "reaper": creds("reaper", "service"),
                        "reaper-admin": creds("reaper-admin", "service"),
                        "demo": creds("demo", "demo")},
        "project_ids": projects,
        "role_ids": roles,
    }
    tmp = os.path.join(args.state, "stack.json.tmp")
    with open(tmp, "w") as f:
        json.dump(stack, f, indent=2)
    os.replace(tmp, os.path.join(args.state, "stack.json"))
    with open(os.path.join(args.state, "admin-openrc"), "w") as f:
        f.write(f"export OS_AUTH_URL={AUTH_URL}\nexport OS_IDENTITY_API_VERSION=3\n"
                f"export OS_USERNAME=admin\nexport OS_PASSWORD={args.password}\n"
                "export OS_PROJECT_NAME=admin\nexport OS_USER_DOMAIN_NAME=Default\n"
                f"export OS_PROJECT_DOMAIN_NAME=Default\nexport OS_REGION_NAME={REGION}\n")
    return 0


def has_pool(args) -> int:
    with open(os.path.join(args.state, "stack.json")) as f:
        stack = json.load(f)
    sess = admin_session(stack["credentials"]["admin"]["password"])
    resp = sess.get("/scheduler-stats/get_pools", raise_exc=False,
                    endpoint_filter={"service_type": "block-storage",
                                     "interface": "public", "region_name": REGION})
    return 0 if resp.status_code == 200 and resp.json().get("pools") else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["catalog", "has-pool"])
    p.add_argument("--state", required=True)
    p.add_argument("--password", default="secret")
    args = p.parse_args()
    return catalog(args) if args.command == "catalog" else has_pool(args)


if __name__ == "__main__":
    sys.exit(main())
