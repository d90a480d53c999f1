"""kofin.serve: knowledge base, retrieval, cited answers, the chat.

The one public answer function is `answer_question` (serve/respond.py): `kofin ask`, the chat
and eval's RAG task all answer through it. It is loaded on first use so that importing a small
serve module (audit, users) stays light.
"""


def __getattr__(name: str):
    if name in ("answer_question", "answer_stream", "AskResult"):
        from kofin.serve import respond

        return getattr(respond, name)
    raise AttributeError(name)
