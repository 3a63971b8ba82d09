"""Helpers the tests import by name (`from helpers.servers import Service`): plain modules, so an
import never depends on which conftest.py pytest loaded last. tests/ is on sys.path through
pyproject's [tool.pytest.ini_options] pythonpath; the conftest.py files hold only fixtures.

  waiting      wait_for, the one polling loop (no sleep stands in for synchronisation)
  tiny_models  tiny random Llama/Cohere checkpoints and the parity dataset
  identities   OCI API-key identities (tenancy, user, RSA key pair, fingerprint)
  databases    SQLite or a fresh PostgreSQL database per test server
  servers      live `tuneforge serve` processes on 127.0.0.1
  clients      the official SDK clients for a server
  fine_tuning  what a fine-tuning test does through the oci SDK: dataset, upload, cluster, model, work request
  console      the web console through starlette's TestClient: sign-in, CSRF, the create form
  serving      serving engines and PEFT/transformers reference generations
  sweeps       the `tuneforge sweep` CLI as a subprocess and its dataset
"""
