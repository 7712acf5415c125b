from hypothesis import given
from hypothesis import strategies as st

from threadcast.store.sanitize import clean_message


def test_keeps_simple_formatting_and_safe_links():
    html = '<p>Hi <b>there</b> <a href="https://example.org">link</a></p>'
    cleaned = clean_message(html)
    assert "<b>there</b>" in cleaned and 'href="https://example.org"' in cleaned
    assert 'rel="nofollow noopener noreferrer ugc"' in cleaned


def test_removes_scripts_handlers_and_bad_urls():
    cleaned = clean_message('<script>x()</script><img src=x onerror=alert(1)><a href="javascript:alert(1)">a</a>')
    assert "script" not in cleaned and "onerror" not in cleaned and "javascript" not in cleaned


@given(st.text())
def test_never_emits_a_script_tag(text):
    assert "<script" not in clean_message(text).lower()
