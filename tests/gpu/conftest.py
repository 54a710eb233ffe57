"""GPU request tests run on the private engine, with or without the GPU stand-in hook.

No GPU is used anywhere in these tests: the stand-in hook only lets dockerd accept GPU device
requests, so the tests check what reaches Docker and the container (the request plumbing).
"""

from tests.reliability import conftest as reliability_fixtures

# Fixtures of tests/kernels and tests/reliability, registered here so pytest finds them.
kernels_prefix = reliability_fixtures.kernels_prefix
kernelspec_manager = reliability_fixtures.kernelspec_manager
make_spec = reliability_fixtures.make_spec
notebook_dir = reliability_fixtures.notebook_dir
owner_env = reliability_fixtures.owner_env
start_kernel = reliability_fixtures.start_kernel
jupyter_server = reliability_fixtures.jupyter_server
private_engine = reliability_fixtures.private_engine
private_spec = reliability_fixtures.private_spec
