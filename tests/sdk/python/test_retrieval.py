"""The Python SDK's embed and rerank (cohere 7.3.1, ClientV2 and the v1 Client) against the shared
server, which serves the chat model and all-MiniLM-L6-v2 side by side: a whole RAG round trip
(embed, rerank, chat with documents) through one base_url."""

import base64
import math
import struct

import cohere
import pytest

from cohost_server import EMBED_MODEL_NAME
from conftest import MODEL

EMBED = EMBED_MODEL_NAME
DOCS = [
    "Bread is baked from flour, water, salt and yeast.",
    "Paris is the capital and largest city of France.",
    "The Rust compiler checks ownership and borrowing at compile time.",
]
QUERY = "What is the capital of France?"


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_v2_embed_returns_every_requested_type(co):
    response = co.embed(
        model=EMBED,
        input_type="search_document",
        texts=DOCS,
        embedding_types=["float", "int8", "uint8", "binary", "ubinary", "base64"],
    )
    assert isinstance(response, cohere.EmbedByTypeResponse)
    e = response.embeddings
    assert len(e.float_) == len(DOCS) and len(e.float_[0]) == 384
    assert response.texts == DOCS
    assert response.meta.billed_units.input_tokens > len(DOCS)
    for i, v in enumerate(e.float_):
        assert abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-5, "normalized"
        assert cosine(e.int8[i], v) > 0.99
        assert [u - 128 for u in e.uint8[i]] == e.int8[i]
        assert len(e.ubinary[i]) == 48 and [b + 128 for b in e.binary[i]] == e.ubinary[i]
        bits = [(e.ubinary[i][d // 8] >> (7 - d % 8)) & 1 for d in range(384)]
        assert bits == [1 if x > 0 else 0 for x in v]
        floats = struct.unpack("<384f", base64.b64decode(e.base64[i]))
        assert list(floats) == pytest.approx(v, abs=1e-7)


def test_v2_embed_inputs_and_query_type(co):
    by_texts = co.embed(model=EMBED, input_type="search_query", texts=[QUERY], embedding_types=["float"])
    by_inputs = co.embed(
        model=EMBED,
        input_type="search_query",
        inputs=[{"content": [{"type": "text", "text": QUERY}]}],
        embedding_types=["float"],
    )
    assert by_inputs.embeddings.float_ == by_texts.embeddings.float_


def test_v1_client_embed_floats_and_batching(base_url):
    v1 = cohere.Client(api_key="", base_url=base_url, timeout=120)
    # More than 96 texts: the SDK splits them into calls of 96 and merges the answers.
    texts = [f"sentence number {i}" for i in range(100)]
    response = v1.embed(texts=texts, model=EMBED, input_type="clustering")
    assert response.response_type == "embeddings_floats"
    assert len(response.embeddings) == 100 and response.texts == texts
    typed = v1.embed(texts=texts[:2], model=EMBED, input_type="clustering", embedding_types=["float", "int8"])
    assert typed.response_type == "embeddings_by_type"
    # A text embeds the same in a batch of 2 as in one of 96 (bit-identical in any batch).
    for typed_row, row in zip(typed.embeddings.float_, response.embeddings[:2], strict=True):
        assert typed_row == pytest.approx(row, abs=1e-7)


def test_v2_rerank_orders_by_relevance(co):
    response = co.rerank(model=EMBED, query=QUERY, documents=DOCS, top_n=2)
    assert [r.index for r in response.results][0] == 1
    assert len(response.results) == 2
    scores = [r.relevance_score for r in response.results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_v1_rerank_returns_documents(base_url):
    v1 = cohere.Client(api_key="", base_url=base_url, timeout=120)
    response = v1.rerank(model=EMBED, query=QUERY, documents=DOCS, return_documents=True)
    assert response.results[0].index == 1
    assert response.results[0].document.text == DOCS[1]


def test_rag_round_trip_embed_rerank_chat_on_one_base_url(co):
    docs = co.embed(model=EMBED, input_type="search_document", texts=DOCS, embedding_types=["float"])
    query = co.embed(model=EMBED, input_type="search_query", texts=[QUERY], embedding_types=["float"])
    nearest = max(range(len(DOCS)), key=lambda i: cosine(query.embeddings.float_[0], docs.embeddings.float_[i]))
    assert nearest == 1
    ranked = co.rerank(model=EMBED, query=QUERY, documents=DOCS, top_n=1)
    best = DOCS[ranked.results[0].index]
    reply = co.chat(
        model=MODEL,
        messages=[{"role": "user", "content": f"Using the document, answer: {QUERY}"}],
        documents=[{"id": "doc-0", "data": {"text": best}}],
        max_tokens=8,
    )
    assert reply.message.content[0].text.strip()


def test_models_list_both_kinds(co):
    models = {m.name: m for m in co.models.list().models}
    assert models[MODEL].endpoints == ["chat"]
    assert models[EMBED].endpoints == ["embed", "rerank"]
    assert models[EMBED].context_length == 256
    embed_only = co.models.list(endpoint="embed").models
    assert [m.name for m in embed_only] == [EMBED]


def test_wrong_endpoint_and_bad_input_raise_bad_request(co):
    with pytest.raises(cohere.BadRequestError) as err:
        co.embed(model=MODEL, input_type="search_query", texts=["a"])
    assert "it serves: chat" in str(err.value.body)
    with pytest.raises(cohere.BadRequestError):
        co.chat(model=EMBED, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(cohere.BadRequestError):
        co.embed(model=EMBED, input_type="image", texts=["a"])
    with pytest.raises(cohere.BadRequestError):
        co.embed(model=EMBED, input_type="search_query", texts=[])
    with pytest.raises(cohere.BadRequestError):
        co.rerank(model=EMBED, query=QUERY, documents=[])
    with pytest.raises(cohere.BadRequestError):
        co.rerank(model=EMBED, query=QUERY, documents=DOCS, top_n=0)
    with pytest.raises(cohere.NotFoundError):
        co.embed(model="no-such-embedder", input_type="search_query", texts=["a"])
