"""Which wire profiles the relay serves, decided in one place, and the secure profile's
file names and words.

With no ``profiles`` setting the relay serves both, except that an authorized-keys
file turns the legacy profile off unless ``bridge_legacy`` says otherwise: a legacy
member reads and can send everything, so it would undo the restriction. A
``profiles`` setting is taken as it is, and refused where it contradicts the others
(it names legacy where authorized keys turn it off, say): a profile the operator
named is never left out in silence.
"""

from mcrelay.settings.quoted import quoted

LEGACY = "legacy"
SECURE = "secure"
PROFILES = (LEGACY, SECURE)
"""Every profile, in the order settings name them."""
COOKIE_MODES = ("auto", "always")
"""``auto``: cookies while under load, as the page says; ``always``: at all times."""
SECURE_KEY_FILE_NAME = "relay-secure.key"
"""The secure key's file, by default in the RSA key file's directory."""
BRIDGE_WARNING = (
    "a bridged legacy member reads and can send everything: this relay has "
    "legacy-level confidentiality"
)


def profile_list(text: str) -> str:
    """``legacy``, ``secure`` or both, comma-separated, as ``legacy,secure`` (in the order
    of :data:`PROFILES`); ``ValueError`` for an empty list, an unknown or repeated name."""
    names = [name.strip().lower() for name in text.split(",")]
    if names == [""]:
        raise ValueError(f"{quoted(text)} names no profile: give legacy, secure or legacy,secure")
    for name in names:
        if name not in PROFILES:
            raise ValueError(f"{quoted(text)}: {quoted(name)} is not a profile (legacy or secure)")
        if names.count(name) > 1:
            raise ValueError(f"{quoted(text)} names {name} twice")
    return ",".join(name for name in PROFILES if name in names)


def check_profile_list(value: str | None) -> None:
    """The rule on a ``profiles`` value however it was given: none, or a list that
    :func:`profile_list` reads."""
    if value is not None:
        profile_list(value)


def served_profiles(
    profiles: str | None, *, restricted: bool, bridge_legacy: bool
) -> tuple[str, ...]:
    """The profiles served: those ``profiles`` names, else both, or only the secure one
    when membership is ``restricted`` (an authorized-keys file) without ``bridge_legacy``."""
    if profiles is not None:
        return tuple(profile_list(profiles).split(","))
    if restricted and not bridge_legacy:
        return (SECURE,)
    return PROFILES


def contradiction(
    profiles: str | None, *, restricted: bool, bridge_legacy: bool
) -> tuple[str, str, tuple[str, ...]] | None:
    """The setting to blame, why, and the settings it contradicts, where ``profiles``
    contradicts the other settings."""
    if profiles is None:
        return None
    named = profile_list(profiles).split(",")
    if restricted and SECURE not in named:
        return (
            "authorized_keys",
            "authorized_keys restricts the secure profile's members, and profiles leaves "
            "that profile out",
            ("profiles",),
        )
    if restricted and LEGACY in named and not bridge_legacy:
        return (
            "profiles",
            "profiles names legacy, but with authorized_keys the legacy profile is off "
            f"unless bridge_legacy is on ({BRIDGE_WARNING}): give bridge_legacy, or leave "
            "legacy out of profiles",
            ("authorized_keys", "bridge_legacy"),
        )
    if bridge_legacy and LEGACY not in named:
        return (
            "bridge_legacy",
            "bridge_legacy serves the legacy profile, and profiles leaves it out",
            ("profiles",),
        )
    return None
