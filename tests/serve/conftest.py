import sys
from pathlib import Path

import pytest

# servekit.py: the tiny model folders and the server process driver.
sys.path.append(str(Path(__file__).resolve().parent))

from servekit import Server, TOKEN, save_compress_folder, save_model  # noqa: E402

CLASSES = ["neg", "pos", "mixed"]


@pytest.fixture(scope="session")
def classifier(tmp_path_factory) -> Path:
    """A random tiny BERT sentence classifier with three classes, as pretune fit saves one."""
    return save_model(tmp_path_factory.mktemp("serve") / "classifier", "BertForSequenceClassification",
                      "classification", CLASSES)


@pytest.fixture(scope="session")
def compress_folder(tmp_path_factory, classifier) -> Path:
    return save_compress_folder(tmp_path_factory.mktemp("serve") / "compress", classifier)


@pytest.fixture(scope="module")
def launched(request, classifier, compress_folder):
    """The module's server processes, all started at once so that their imports and loading overlap:

    main      the classifier, a token, batches of up to 32 texts gathered for 50 ms, small limits to hit
    variant   a compress folder (serves its recommended variant), texts held 1.5 s for a batch (the shutdown test)
    workers   the classifier in two worker processes (started only when a selected test uses it)
    """
    servers = {
        "main": Server(classifier, "--token", TOKEN, "--max-wait-ms", "50", "--max-length", "16",
                       "--max-texts", "8", "--max-body-bytes", "4096"),
        "variant": Server(compress_folder, "--max-wait-ms", "1500", "--max-batch-size", "64"),
    }
    if any("workers_server" in getattr(item, "fixturenames", ()) for item in request.session.items):
        servers["workers"] = Server(classifier, "--workers", "2", "--max-wait-ms", "1")
    yield servers
    for server in servers.values():
        server.kill()


@pytest.fixture(scope="module")
def main_server(launched) -> Server:
    return launched["main"].wait_ready()


@pytest.fixture(scope="module")
def variant_server(launched) -> Server:
    return launched["variant"].wait_ready()


@pytest.fixture(scope="module")
def workers_server(launched) -> Server:
    return launched["workers"].wait_ready()
