"""pytest fixtures for the simulator's own suite (run with Debian's pytest-3)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from simclient import GraphSim  # noqa: E402
from simtestlib import ALICE, BOB, CAROL, CLIENT, SECRET, TENANT, Env, Receiver  # noqa: E402


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphsim")
    s = GraphSim(state_dir=str(d))
    yield s
    s.stop()


@pytest.fixture
def env(sim):
    sim.reset()
    sim.config_defaults()
    sim.clear_faults()
    sim.seed({
        "apps": [{"tenant": TENANT, "client_id": CLIENT, "client_secret": SECRET,
                  "permissions": ["Calendars.ReadWrite", "MailboxSettings.ReadWrite"]}],
        "users": [{"mail": ALICE, "displayName": "Alice"}, {"mail": BOB, "displayName": "Bob"},
                  {"mail": CAROL, "displayName": "Carol"}],
    })
    yield Env(sim)
    sim.clear_faults()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()
