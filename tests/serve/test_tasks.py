"""Every servable task answers with the rows ``pretune predict`` writes for it: regression of text pairs and token
classification (entity spans), through the app in this process (FastAPI's test client runs its lifespan)."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")  # the test client's

from servekit import save_model  # noqa: E402

from pretune.serve import ServeConfig  # noqa: E402

TAGS = ["O", "B-POS", "I-POS", "B-NEG", "I-NEG"]
PAIRS = [("good film", "great plot"), ("bad actor", "a lovely story"), ("the scene was dull", "dull")]


def client_for(folder, **settings):
    from fastapi.testclient import TestClient

    from pretune.serve.app import create_app
    from pretune.serve.model import inspect

    cfg = ServeConfig(path=str(folder), threads=1, **settings)
    client = TestClient(create_app(cfg, inspect(cfg.path, cfg.max_length)))
    client.__enter__()  # runs the lifespan: the model loads in the background
    deadline = time.monotonic() + 120
    while (health := client.get("/health")).status_code != 200:
        assert time.monotonic() < deadline and health.status_code == 503 and health.json()["status"] == "loading"
        time.sleep(0.05)
    return client


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    folder = save_model(tmp_path_factory.mktemp("serve") / "sts", "BertForSequenceClassification", "regression")
    client = client_for(folder, max_length=8, on_long="refuse")
    yield folder, client
    client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    folder = save_model(tmp_path_factory.mktemp("serve") / "ner", "BertForTokenClassification",
                        "token_classification", TAGS, {"scheme": "IOB2"})
    client = client_for(folder, max_length=8)  # windows of 6 words: long texts are cut, not truncated
    yield folder, client
    client.__exit__(None, None, None)


def test_pairs_get_the_regression_rows_of_predict(regression, tmp_path):
    from conftest import write_csv

    from pretune.jobs.predict import predict_file

    folder, client = regression
    path = write_csv(tmp_path / "pairs.csv", PAIRS, header=("text", "text_pair"))
    want = predict_file(str(folder), str(path), text_pair="text_pair", max_length=8, device="cpu", precision="fp32")
    answer = client.post("/predict", json={"texts": [a for a, _ in PAIRS], "text_pairs": [b for _, b in PAIRS]})
    assert answer.status_code == 200, answer.text
    got = answer.json()["results"]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-5)
    one = client.post("/predict", json={"text": PAIRS[0][0], "text_pair": PAIRS[0][1]}).json()["result"]
    assert one["score"] == pytest.approx(want[0]["score"], abs=1e-5)
    # without its pair a text is another input, with another prediction
    alone = client.post("/predict", json={"text": PAIRS[0][0]}).json()["result"]
    assert alone["score"] != pytest.approx(want[0]["score"], abs=1e-6)


def test_refuse_turns_down_a_text_over_the_length_limit(regression):
    _, client = regression
    answer = client.post("/predict", json={"texts": ["good film", "good " * 7], "text_pairs": ["fine", "fine"]})
    assert answer.status_code == 422
    assert answer.json() == {"error": "text 1: 11 tokens, over the limit of 8 (--max-length); shorten it, or start "
                                      "the server with --on-long truncate"}
    assert client.post("/predict", json={"text": "good film", "text_pair": "fine"}).status_code == 200


def test_token_classification_answers_with_entity_spans_as_predict_does(tagger, tmp_path):
    from pretune.jobs.predict import predict_file

    folder, client = tagger
    texts = ["good film", "the actor was very good, the plot awful and dull", "lovely"]
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    want = predict_file(str(folder), str(path), max_length=8, device="cpu", precision="fp32")
    answer = client.post("/predict", json={"texts": texts})
    assert answer.status_code == 200, answer.text
    got = answer.json()["results"]
    assert [r["tags"] for r in got] == [r["tags"] for r in want]
    assert [r["tokens"] for r in got] == [r["tokens"] for r in want]
    assert len(got[1]["tokens"]) == len(got[1]["tags"]) == 11  # longer than one window (6 words), every word tagged
    spans = [[(e["type"], e["char_start"], e["char_end"], e["text"]) for e in r["entities"]] for r in got]
    assert spans == [[(e["type"], e["char_start"], e["char_end"], e["text"]) for e in r["entities"]] for r in want]
    assert any(spans), "the random tagger marks no entity: pick another seed"
    assert all(texts[i][a:b] == t for i, row in enumerate(spans) for _, a, b, t in row)


def test_a_tagger_refuses_a_text_pair(tagger):
    _, client = tagger
    answer = client.post("/predict", json={"text": "good film", "text_pair": "bad"})
    assert answer.status_code == 422 and "text_pair" in answer.json()["error"]
