"""LangChain's ChatCohere, CohereEmbeddings and CohereRerank (langchain-cohere==0.6.0, which pins
its own cohere<6) pointed at the real cohost binary serving a chat and an embedding model:
invoke() and stream() return the model's text; embeddings and reranking find the relevant
document."""

import cohere
import httpx
import pytest
from cohost_server import EMBED_MODEL_NAME
from langchain_cohere import ChatCohere, CohereEmbeddings, CohereRerank
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from conftest import MODEL, Server

QUESTION = "Name three colours."


def server_text(base_url, messages):
    """The server's own greedy reply, read without any SDK, to compare LangChain against."""
    reply = httpx.post(
        f"{base_url}/v2/chat",
        json={"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 16},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    return reply.json()["message"]["content"][0]["text"]


def chat_model(base_url, api_key="any-key-an-open-server-ignores", **kwargs):
    # Not "": cohere 5.x, which langchain-cohere 0.6.0 pins, sends `Bearer ` for an empty key and
    # httpx refuses that header before any request (cohere 7 omits it). An open server ignores
    # whatever key it gets.
    # ChatCohere does not forward a constructor max_tokens to the v2 chat call; bound call
    # arguments do reach it.
    llm = ChatCohere(cohere_api_key=api_key, base_url=base_url, temperature=0, **kwargs)
    return llm.bind(max_tokens=16)


def test_invoke_returns_the_models_text(base_url):
    message = chat_model(base_url, model=MODEL).invoke(QUESTION)
    assert isinstance(message, AIMessage)
    assert message.content == server_text(base_url, [{"role": "user", "content": QUESTION}])
    assert message.content.strip()
    assert message.usage_metadata["output_tokens"] > 0


def test_stream_yields_the_same_text_in_pieces(base_url):
    llm = chat_model(base_url, model=MODEL)
    chunks = [chunk.content for chunk in llm.stream(QUESTION)]
    text = "".join(c for c in chunks if isinstance(c, str))
    assert len([c for c in chunks if c]) > 1, chunks
    assert text == server_text(base_url, [{"role": "user", "content": QUESTION}])


def test_system_and_history_messages(base_url):
    history = [
        SystemMessage(content="You answer in one word."),
        HumanMessage(content="What colour is the sky?"),
        AIMessage(content="Blue."),
        HumanMessage(content="And grass?"),
    ]
    message = chat_model(base_url, model=MODEL).invoke(history)
    wire = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And grass?"},
    ]
    assert message.content == server_text(base_url, wire)


def test_without_a_model_name_the_served_model_is_used(base_url):
    # ChatCohere asks models.list(default_only=True, endpoint="chat") for one.
    llm = chat_model(base_url)
    assert llm.bound.model == MODEL
    assert llm.invoke(QUESTION).content.strip()


def test_with_auth_on_the_right_key_works_and_a_wrong_one_is_refused():
    with Server("--api-key", "langchain-key") as server:
        good = chat_model(server.url, api_key="langchain-key", model=MODEL)
        assert good.invoke(QUESTION).content.strip()
        bad = chat_model(server.url, api_key="wrong-key", model=MODEL)
        with pytest.raises(cohere.UnauthorizedError) as caught:
            bad.invoke(QUESTION)
        assert set(caught.value.body) == {"id", "message"}


# Embeddings and rerank: the shared server also serves all-MiniLM-L6-v2.

DOCS = [
    "Bread is baked from flour, water, salt and yeast.",
    "Paris is the capital and largest city of France.",
    "The Rust compiler checks ownership and borrowing at compile time.",
]


def test_cohere_embeddings_documents_and_query(base_url):
    emb = CohereEmbeddings(model=EMBED_MODEL_NAME, cohere_api_key="any-key", base_url=base_url)
    docs = emb.embed_documents(DOCS)
    query = emb.embed_query("What is the capital of France?")
    assert len(docs) == 3 and len(query) == 384
    dot = [sum(a * b for a, b in zip(query, d)) for d in docs]
    assert max(range(3), key=lambda i: dot[i]) == 1


def test_cohere_rerank_compresses_documents(base_url):
    rerank = CohereRerank(model=EMBED_MODEL_NAME, cohere_api_key="any-key", base_url=base_url, top_n=2)
    ranked = rerank.rerank(DOCS, "What is the capital of France?")
    assert [r["index"] for r in ranked][0] == 1 and len(ranked) == 2
    kept = rerank.compress_documents([Document(page_content=d) for d in DOCS], "capital of France")
    assert kept[0].page_content == DOCS[1]
    assert 0 <= kept[0].metadata["relevance_score"] <= 1
