"""The fault matrix (issue 9): named crash, race and fault scenarios on real parts.

Each ``test_fm_<slice>.py`` module holds scenarios; each scenario is a test function
``test_<scenario_name>`` whose docstring is

    <One sentence: the situation / the fault.>

    Expect: <the expected end state: what stays, what goes, exit code.>

and each ``pytest.param(..., id=...)`` of its parametrize decorators is one more
scenario. ``tools/gen-fault-matrix.py`` turns them into doc/fault-matrix.md (and
tests/unit/test_fault_matrix_doc.py fails when that page is out of date).

``harness.py`` builds the throwaway host (``FmHost``: instances_path, state_path,
audit log, config file, a Nova DB, KVM domains in libvirtd, VIF devices in a network
namespace with their OVS ports, an iSCSI simulator) and runs reaper-manage passes as
subprocesses through ``killer.py``, which can SIGKILL or hold a pass at any teardown
step boundary. ``conftest.py`` provides the fixtures (``fm_host`` and the module-wide
services behind it).
"""
