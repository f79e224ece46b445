"""Create Neutron's schema in a SQLite file from its models (argv[1]: the URL).

Neutron's alembic migrations cannot run on SQLite (they ALTER constraints), so,
as Neutron's own unit tests do, the tables come from the models of the head
revision; start.sh then stamps the database at the heads.
"""
import sys

import sqlalchemy as sa
from neutron.db.migration.models import head  # noqa: F401  (registers every model)
from neutron_lib.db import model_base

engine = sa.create_engine(sys.argv[1])
model_base.BASEV2.metadata.create_all(engine)
engine.dispose()
