"""Pure Matrix rules: threads, triggers, reply fallbacks, rights, invites and HTML safety."""

from __future__ import annotations

from adapters.matrix_mapping import (
    edit_target,
    inviter_allowed,
    is_addressed,
    is_operator,
    is_room_manager,
    is_text_file,
    mentions_user,
    readable_text,
    room_for,
    strip_reply_fallback,
)
from adapters.matrix_render import edit_content, preformatted_content, render_html, text_content, with_relation

BOT = "@hearth:example.org"


def test_a_thread_is_its_own_room_and_the_main_timeline_is_not():
    threaded = {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}
    assert room_for("!r:x", threaded).thread_id == "$root"
    assert room_for("!r:x", {}).thread_id is None
    assert room_for("!r:x", {"m.relates_to": {"m.in_reply_to": {"event_id": "$a"}}}).thread_id is None


def test_mentions_by_pill_id_or_display_name_but_not_room():
    assert mentions_user({"m.mentions": {"user_ids": [BOT]}}, "hey", BOT, "Hearth")
    assert mentions_user({}, f"hi {BOT}!", BOT, "Hearth")
    assert mentions_user({}, "hearth: what's up", BOT, "Hearth")
    assert not mentions_user({}, "the hearthstone is warm", BOT, "Hearth")
    assert not mentions_user({"m.mentions": {"room": True}}, "@room meeting now", BOT, "Hearth")


def test_dm_rooms_answer_everything_and_group_rooms_need_a_trigger():
    plain = {"msgtype": "m.text", "body": "hello"}
    assert is_addressed(plain, "hello", user_id=BOT, display_name="Hearth", member_count=2)
    assert not is_addressed(plain, "hello", user_id=BOT, display_name="Hearth", member_count=5)
    reply = {"m.relates_to": {"m.in_reply_to": {"event_id": "$mine"}}}
    assert is_addressed(reply, "ok", user_id=BOT, display_name="Hearth", member_count=5, own_event_ids={"$mine"})
    assert not is_addressed(reply, "ok", user_id=BOT, display_name="Hearth", member_count=5, own_event_ids={"$x"})


def test_reply_fallback_and_the_bots_own_address_are_removed():
    body = "> <@alice:x> earlier words\n> more\n\nthe actual question"
    assert strip_reply_fallback(body) == "the actual question"
    assert strip_reply_fallback("no quote here") == "no quote here"
    reply = {"m.relates_to": {"m.in_reply_to": {"event_id": "$e"}}}
    assert readable_text(body, reply, BOT, "Hearth") == "the actual question"
    assert readable_text("Hearth: tell me a story", {}, BOT, "Hearth") == "tell me a story"
    assert readable_text(f"{BOT} hi there", {}, BOT, "Hearth") == "hi there"


def test_edits_are_recognised():
    assert edit_target({"m.relates_to": {"rel_type": "m.replace", "event_id": "$old"}}) == "$old"
    assert edit_target({"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}) is None


def test_operators_by_glob_only_and_room_managers_by_power_level():
    assert is_operator("@ops:example.org", ["@*:example.org"])
    assert not is_operator("@ops:evil.org", ["@*:example.org"])
    assert not is_operator("@mod:evil.org", [])  # no power level makes an operator
    assert is_room_manager(50, 50)
    assert not is_room_manager(49, 50)


def test_invites_default_to_the_bots_own_server():
    assert inviter_allowed("@alice:example.org", [], BOT)
    assert not inviter_allowed("@mallory:elsewhere.net", [], BOT)
    assert inviter_allowed("@mallory:elsewhere.net", ["@*:elsewhere.net"], BOT)
    assert not inviter_allowed("@alice:example.org", ["@bob:example.org"], BOT)


def test_text_files_by_mimetype_or_suffix():
    assert is_text_file("notes.bin", "text/plain; charset=utf-8")
    assert is_text_file("README.md", None)
    assert not is_text_file("cat.png", "image/png")


def test_model_html_is_escaped_and_markdown_rendered():
    html = render_html("**bold** <script>alert(1)</script> <b onclick=x>hi</b>")
    assert "<strong>bold</strong>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b onclick" not in html
    assert "href" not in render_html("[x](javascript:alert(1))")  # unsafe links stay plain text
    assert 'href="https://example.org"' in render_html("[x](https://example.org)")


def test_every_event_pings_nobody():
    content = text_content("hey @room and @everyone, look")
    assert content["m.mentions"] == {}
    assert "@room" not in content["body"] and "@everyone" not in content["body"]
    assert "formatted_body" not in content  # plain text needs no HTML
    assert preformatted_content("a  b\n@room")["m.mentions"] == {}


def test_relations_keep_threads_and_edits_carry_new_content():
    threaded = with_relation(text_content("hi"), reply_to="$q", thread="$root")
    assert threaded["m.relates_to"]["rel_type"] == "m.thread"
    assert threaded["m.relates_to"]["event_id"] == "$root"
    assert threaded["m.relates_to"]["m.in_reply_to"] == {"event_id": "$q"}
    plain = with_relation(text_content("hi"), reply_to="$q", thread=None)
    assert plain["m.relates_to"] == {"m.in_reply_to": {"event_id": "$q"}}
    edit = edit_content("$first", text_content("*final* text"))
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$first"}
    assert edit["m.new_content"]["body"] == "*final* text"
    assert edit["m.new_content"]["m.mentions"] == {} and edit["m.mentions"] == {}
    assert edit["body"].startswith("* ")


def test_room_v12_creators_are_admins_without_a_power_level_entry():
    from adapters.matrix_mapping import creators_of, effective_power

    create = {"type": "m.room.create", "sender": "@owner:x", "content": {"additional_creators": ["@co:x"]}}
    creators = creators_of(create)
    assert creators == {"@owner:x", "@co:x"}
    assert is_room_manager(effective_power("@co:x", 0, creators, "12"), 50)
    assert not is_room_manager(effective_power("@owner:x", 0, creators, "11"), 50)
    assert not is_room_manager(effective_power("@guest:x", 0, creators, "12"), 50)
