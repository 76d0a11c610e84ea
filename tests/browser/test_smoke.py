from .browser_helpers import open_editor, focus_end, wait_synced, doc_text


def test_type_and_sync(server, contexts):
    a = open_editor(contexts(), server.url, "smoke")
    b = open_editor(contexts(), server.url, "smoke")
    focus_end(a)
    a.keyboard.type("hello world")
    text = wait_synced([a, b], server.url, "smoke")
    assert text == "hello world"
    assert doc_text(b) == "hello world"
