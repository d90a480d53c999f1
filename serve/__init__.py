"""kofin.serve: knowledge base, retrieval, cited answers, the chat.

The one public answer function is `answer_question` (serve/respond.py): `kofin ask`, the chat
and eval's RAG task all answer through it. Other stages use only the names below, imported from
`kofin.serve` itself (serve/public.py); they load on first use so that importing a small serve
module (audit, users) stays light.
"""

PUBLIC = {
    "answer_question": "respond",
    "answer_stream": "respond",
    "AskResult": "respond",
    "AnswerSettings": "settings",
    "build_knowledge_base": "public",
    "open_kb": "public",
}


def __getattr__(name: str):
    if name in PUBLIC:
        from importlib import import_module

        return getattr(import_module(f"kofin.serve.{PUBLIC[name]}"), name)
    raise AttributeError(name)
