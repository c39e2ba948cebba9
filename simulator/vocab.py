"""Names, spaces and audit events the simulated site is built from (unicode on purpose)."""

from __future__ import annotations

FIRST = [
    "Ada", "Grace", "Alan", "Åsa", "Zoë", "José", "Søren", "Łukasz", "Mária", "Chloé",
    "Nguyễn", "Мария", "李", "Aoife", "Ðorđe", "Ingrid", "Kwame", "Priya", "Dana", "Omar",
]  # fmt: skip
LAST = [
    "Lovelace", "Hopper", "Turing", "Öberg", "Müller", "García", "Kowalski", "Nakamura",
    "O'Brien", "Ødegaard", "Иванова", "王", "Dubois", "Smith", "Okafor", "Patel", "Reyes",
]  # fmt: skip
EMOJI = ["🚀", "☕", "🌈", "🦄", "🎉"]
TIMEZONES = ["Europe/Stockholm", "Europe/London", "America/New_York", "Asia/Tokyo", None]
SPACES = [
    ("ENG", "Engineering"),
    ("HR", "People & Culture"),
    ("DOCS", "Dokumentation 📚"),
    ("OPS", "Operações"),
    ("~ada", "Ada's space"),
]
CONTENT_TYPES = ["page", "page", "page", "blogpost", "comment", "comment", "attachment"]

EVENTS: list[tuple[str, str, str]] = [
    ("User added to group", "Users and groups", "Group"),
    ("User removed from group", "Users and groups", "Group"),
    ("User created", "Users and groups", "User"),
    ("User deactivated", "Users and groups", "User"),
    ("User details updated", "Users and groups", "User"),
    ("Space created", "Spaces", "Space"),
    ("Space configuration updated", "Spaces", "Space"),
    ("Space exported", "Spaces", "Space"),
    ("Global permission added", "Permissions", "Global Permission"),
    ("Space permission removed", "Permissions", "Space Permission"),
    ("Content restriction added", "Permissions", "Page"),
    ("Page archived", "Page", "Page"),
    ("Global settings changed", "Global administration", "Settings"),
    ("Public link enabled", "Public links", "Page"),
]
