"""reconcile.settle_heap: what the process imported and wired is frozen out of the
cyclic GC's full collections, once, when the process builds its Reaper."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_settle_heap_freezes_what_is_alive_and_collects_later_garbage():
    # In a child: freezing is process-wide and must not leak into this test run.
    code = textwrap.dedent("""
        import gc
        from reaper import reconcile
        assert gc.get_freeze_count() == 0
        reconcile.settle_heap()
        frozen = gc.get_freeze_count()
        assert frozen > 1000, frozen       # the imported modules' objects
        assert gc.get_threshold()[0] == reconcile.GC_YOUNG_THRESHOLD > 700
        class Cycle:
            pass
        a, b = Cycle(), Cycle()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2           # garbage made afterwards is still collected
        assert gc.get_freeze_count() == frozen
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_build_from_conf_settles_the_heap(tmp_path):
    """The agent and reaper-manage build their Reaper with build_from_conf: frozen."""
    import sqlalchemy as sa

    from reaper.nova import schema
    db = tmp_path / "nova.sqlite"
    schema.create_all(sa.create_engine(f"sqlite:///{db}"))
    conf = tmp_path / "reaper.conf"
    conf.write_text(f"[DEFAULT]\nhost = settle-host\nstate_path = {tmp_path / 'state'}\n"
                    f"instances_path = {tmp_path}\n[database]\nconnection = sqlite:///{db}\n"
                    "[network]\nenabled = false\n[reaper]\naudit_log =\n")
    code = textwrap.dedent(f"""
        import gc
        from reaper import config, reconcile
        config.CONF(["--config-file", {str(conf)!r}], project="reaper")
        assert gc.get_freeze_count() == 0
        r = reconcile.build_from_conf(config.CONF)
        assert gc.get_freeze_count() > 1000 and gc.isenabled()
        r.close()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
