"""`python -m driftloop_simulator`: serve the simulator (settings from DRIFTLOOP_SIM_*)."""

from driftloop_simulator.app import serve

if __name__ == "__main__":
    serve()
