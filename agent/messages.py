"""The one message catalogue (English and Greek) for agent status messages and the UI's words.

Keys are dotted strings; every entry has an `en` and an `el` text with `str.format` placeholders.
`text(key, lang, **kw)` formats one; `register(entries)` lets the UI add its own keys to the same
catalogue, so the status line the agent computes and the window's words never disagree.

Status messages: every reason `compute_status` can give has `status.<reason>` (what is the case) and
`fix.<reason>` (what to do; may be empty). `agent.core.state` joins the two into `LicenseStatus.message`.
`error.<code>` are the agent's own refusals (shown by the CLI, the UI and the local API).

A lookup that has to fall back (an unknown key, or a key without a text in the asked language) is
recorded; `fallbacks()` lists them, so tests can prove no Greek screen silently shows English.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("en", "el")
DEFAULT_LANGUAGE = "en"

_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_CATALOGUE: dict[str, dict[str, str]] = {
    "days.one": {"en": "{n} day", "el": "{n} ημέρα"},
    "days.other": {"en": "{n} days", "el": "{n} ημέρες"},
    # trial_active
    "status.trial": {"en": "Free trial: {days} left.", "el": "Δωρεάν δοκιμή: απομένουν {days}."},
    "fix.trial": {
        "en": "Buy a subscription to keep selling after the trial.",
        "el": "Αγοράστε συνδρομή για να συνεχίσετε να πουλάτε μετά τη δοκιμή.",
    },
    "status.provisional_trial": {
        "en": "Offline trial: {days} left.",
        "el": "Δοκιμή χωρίς σύνδεση: απομένουν {days}.",
    },
    "fix.provisional_trial": {
        "en": "Connect this computer to the internet so the trial can be confirmed.",
        "el": "Συνδέστε τον υπολογιστή στο διαδίκτυο για να επιβεβαιωθεί η δοκιμή.",
    },
    # trial_expired
    "status.trial_ended": {"en": "The free trial has ended.", "el": "Η δωρεάν δοκιμή έληξε."},
    "fix.trial_ended": {
        "en": "Buy a subscription to take orders again.",
        "el": "Αγοράστε συνδρομή για να δέχεστε ξανά παραγγελίες.",
    },
    # licensed_active
    "status.active": {"en": "Licensed. Renews on {date}.", "el": "Ενεργή άδεια. Ανανεώνεται στις {date}."},
    "status.active_nodate": {"en": "Licensed.", "el": "Ενεργή άδεια."},
    "fix.active": {"en": "", "el": ""},
    "status.cancel_scheduled": {
        "en": "Licensed until {date}; the subscription will not renew.",
        "el": "Ενεργή άδεια έως {date}· η συνδρομή δεν θα ανανεωθεί.",
    },
    "fix.cancel_scheduled": {
        "en": "To keep selling after that date, turn renewal back on in Manage billing.",
        "el": "Για να συνεχίσετε μετά από αυτή την ημερομηνία, ενεργοποιήστε ξανά την ανανέωση από τη "
        "Διαχείριση χρέωσης.",
    },
    # licensed_grace
    "status.offline_grace": {
        "en": "Licensed, but offline since {since}. Orders are allowed for {days} more.",
        "el": "Ενεργή άδεια, αλλά χωρίς σύνδεση από {since}. Οι παραγγελίες επιτρέπονται για {days} ακόμη.",
    },
    "fix.offline_grace": {
        "en": "Check the internet connection, then press Sync now.",
        "el": "Ελέγξτε τη σύνδεση στο διαδίκτυο και πατήστε «Συγχρονισμός τώρα».",
    },
    # licensed_renewal_required
    "status.payment_failed": {
        "en": "The last payment failed. Orders are allowed for {days} more (until {date}).",
        "el": "Η τελευταία πληρωμή απέτυχε. Οι παραγγελίες επιτρέπονται για {days} ακόμη (έως {date}).",
    },
    "fix.payment_failed": {
        "en": "Update the card in Manage billing.",
        "el": "Ενημερώστε την κάρτα από τη Διαχείριση χρέωσης.",
    },
    "status.payment_action_required": {
        "en": "The payment needs confirming with your bank. Orders are allowed for {days} more "
        "(until {date}).",
        "el": "Η πληρωμή χρειάζεται επιβεβαίωση από την τράπεζά σας. Οι παραγγελίες επιτρέπονται για {days} "
        "ακόμη (έως {date}).",
    },
    "fix.payment_action_required": {
        "en": "Press Confirm payment and approve it with your bank (the card is fine).",
        "el": "Πατήστε «Επιβεβαίωση πληρωμής» και εγκρίνετέ την στην τράπεζά σας (η κάρτα είναι εντάξει).",
    },
    "status.payment_grace_ended": {
        "en": "The payment is overdue and orders are paused.",
        "el": "Η πληρωμή καθυστερεί και οι παραγγελίες έχουν σταματήσει.",
    },
    "fix.payment_grace_ended": {
        "en": "Update the card in Manage billing; the terminal unlocks at the next sync.",
        "el": "Ενημερώστε την κάρτα από τη Διαχείριση χρέωσης· το τερματικό ξεκλειδώνει στον επόμενο "
        "συγχρονισμό.",
    },
    # licensed_cancelled
    "status.subscription_ended": {"en": "The subscription has ended.", "el": "Η συνδρομή έχει λήξει."},
    "fix.subscription_ended": {
        "en": "Buy a subscription to take orders again.",
        "el": "Αγοράστε συνδρομή για να δέχεστε ξανά παραγγελίες.",
    },
    # licensed_cancelled, reason paused: the owner paused the subscription for the season
    "status.paused": {
        "en": "POSPal is paused for the season, {until}.",
        "el": "Το POSPal είναι σε παύση για τη σεζόν, {until}.",
    },
    "fix.paused": {
        "en": "Nothing is charged meanwhile, and every terminal keeps its place.",
        "el": "Στο μεταξύ δεν χρεώνεται τίποτα και κάθε τερματικό κρατά τη θέση του.",
    },
    "pause.until_date": {"en": "until {date}", "el": "έως τις {date}"},
    "pause.until_resumed": {"en": "until you resume it", "el": "μέχρι να το επαναφέρετε"},
    # license_missing
    "status.not_activated": {
        "en": "This computer is not activated.",
        "el": "Ο υπολογιστής δεν έχει ενεργοποιηθεί.",
    },
    "fix.not_activated": {
        "en": "Start a free trial, buy a subscription, or activate with your email.",
        "el": "Ξεκινήστε δωρεάν δοκιμή, αγοράστε συνδρομή ή ενεργοποιήστε με το email σας.",
    },
    # license_missing after an old POSPal license was not moved (agent/vault/pospal1.py NOTICES): not reasons
    # of their own (the reason stays not_activated), so not `status.` keys
    "old_app.used": {
        "en": "The old POSPal license was already moved to another computer.",
        "el": "Η παλιά άδεια POSPal έχει ήδη μεταφερθεί σε άλλον υπολογιστή.",
    },
    "old_app.used.fix": {
        "en": "Nothing is lost: activate this PC with the code sent to the owner's email, or start a free "
        "trial.",
        "el": "Δεν χάθηκε τίποτα: ενεργοποιήστε τον υπολογιστή με τον κωδικό που στέλνεται στο email του "
        "ιδιοκτήτη ή ξεκινήστε δωρεάν δοκιμή.",
    },
    "old_app.closed": {
        "en": "The old POSPal license cannot be moved any more (the move-over period has ended).",
        "el": "Η παλιά άδεια POSPal δεν μεταφέρεται πια (η περίοδος μεταφοράς έληξε).",
    },
    "old_app.closed.fix": {
        "en": "Nothing is lost: activate with the code sent to the owner's email, buy a subscription, or "
        "start a free trial.",
        "el": "Δεν χάθηκε τίποτα: ενεργοποιήστε με τον κωδικό που στέλνεται στο email του ιδιοκτήτη, "
        "αγοράστε συνδρομή ή ξεκινήστε δωρεάν δοκιμή.",
    },
    "old_app.refused": {
        "en": "The old POSPal license could not be moved: the server did not accept it (no current "
        "subscription for it).",
        "el": "Η παλιά άδεια POSPal δεν μεταφέρθηκε: ο διακομιστής δεν τη δέχτηκε (δεν υπάρχει ενεργή "
        "συνδρομή γι' αυτήν).",
    },
    "old_app.refused.fix": {
        "en": "Nothing is lost and the old files are kept: activate with the code sent to the owner's "
        "email, buy a subscription, or start a free trial.",
        "el": "Δεν χάθηκε τίποτα και τα παλιά αρχεία μένουν: ενεργοποιήστε με τον κωδικό που στέλνεται στο "
        "email του ιδιοκτήτη, αγοράστε συνδρομή ή ξεκινήστε δωρεάν δοκιμή.",
    },
    "old_app.unreadable": {
        "en": "An old POSPal license is on this PC, but it cannot be read (damaged, or from another "
        "computer).",
        "el": "Υπάρχει παλιά άδεια POSPal σε αυτόν τον υπολογιστή, αλλά δεν διαβάζεται (κατεστραμμένη ή "
        "από άλλον υπολογιστή).",
    },
    "old_app.unreadable.fix": {
        "en": "Nothing is lost and the file is left as it is: activate with the code sent to the owner's "
        "email, buy a subscription, or start a free trial.",
        "el": "Δεν χάθηκε τίποτα και το αρχείο μένει ως έχει: ενεργοποιήστε με τον κωδικό που στέλνεται "
        "στο email του ιδιοκτήτη, αγοράστε συνδρομή ή ξεκινήστε δωρεάν δοκιμή.",
    },
    # license_error
    "status.offline_expired": {
        "en": "This terminal has been offline for too long and orders are paused.",
        "el": "Το τερματικό είναι πολύ καιρό χωρίς σύνδεση και οι παραγγελίες έχουν σταματήσει.",
    },
    "fix.offline_expired": {
        "en": "Connect to the internet and press Sync now.",
        "el": "Συνδεθείτε στο διαδίκτυο και πατήστε «Συγχρονισμός τώρα».",
    },
    "status.machine_changed": {
        "en": "This computer's hardware no longer matches its license.",
        "el": "Το υλικό του υπολογιστή δεν αντιστοιχεί πλέον στην άδεια.",
    },
    "fix.machine_changed": {
        "en": "Activate this PC again with your email (Move the license frees the old one).",
        "el": "Ενεργοποιήστε ξανά τον υπολογιστή με το email σας (η Μεταφορά άδειας ελευθερώνει τον παλιό).",
    },
    "status.clock_rollback": {
        "en": "The computer's clock has been set back.",
        "el": "Το ρολόι του υπολογιστή έχει γυρίσει πίσω.",
    },
    "fix.clock_rollback": {
        "en": "Set the correct date and time, then press Sync now.",
        "el": "Ρυθμίστε τη σωστή ημερομηνία και ώρα και πατήστε «Συγχρονισμός τώρα».",
    },
    "status.token_invalid": {
        "en": "The stored license could not be verified.",
        "el": "Η αποθηκευμένη άδεια δεν ήταν δυνατό να επαληθευτεί.",
    },
    "fix.token_invalid": {
        "en": "Press Sync now; if it persists, activate this PC again.",
        "el": "Πατήστε «Συγχρονισμός τώρα»· αν επιμένει, ενεργοποιήστε ξανά τον υπολογιστή.",
    },
    # licensed_active on an offline license (activation by file): no sync is needed until its end.
    "status.offline_license": {
        "en": "Offline license: valid until {date}.",
        "el": "Άδεια χωρίς σύνδεση: ισχύει έως {date}.",
    },
    "fix.offline_license": {
        "en": "Before that date, renew it with a new activation file (or connect to the internet).",
        "el": "Πριν από αυτή την ημερομηνία, ανανεώστε την με νέο αρχείο ενεργοποίησης (ή συνδεθείτε στο "
        "διαδίκτυο).",
    },
    "status.revoked": {
        "en": "This computer's license was removed or revoked.",
        "el": "Η άδεια αυτού του υπολογιστή αφαιρέθηκε ή ανακλήθηκε.",
    },
    "fix.revoked": {
        "en": "Activate this PC again with your email, or contact POSPal support.",
        "el": "Ενεργοποιήστε ξανά τον υπολογιστή με το email σας ή επικοινωνήστε με την υποστήριξη POSPal.",
    },
    "status.seats_exceeded": {
        "en": "This terminal is over the subscription's number of terminals and does not take orders.",
        "el": "Αυτό το τερματικό ξεπερνά τον αριθμό τερματικών της συνδρομής και δεν δέχεται παραγγελίες.",
    },
    "fix.seats_exceeded": {
        "en": "The owner can add a terminal in Manage billing, or choose which terminals stay under Move.",
        "el": "Ο ιδιοκτήτης μπορεί να προσθέσει τερματικό στη Διαχείριση χρέωσης ή να διαλέξει ποια "
        "τερματικά μένουν στη Μεταφορά.",
    },
    # Not a license state (so not `status.`): what the tray shows while it cannot reach the service
    # (agent.link.channelcontrol: reason service_stopped or service_not_genuine, under license_error).
    "channel.service_stopped": {
        "en": "The POSPal License service is not running, so this window cannot show the license.",
        "el": "Η υπηρεσία αδειών POSPal δεν εκτελείται, γι' αυτό το παράθυρο δεν μπορεί να δείξει την άδεια.",
    },
    "channel.service_stopped.fix": {
        "en": "Restart the computer, or ask the administrator to start the service. This window reconnects "
        "by itself.",
        "el": "Επανεκκινήστε τον υπολογιστή ή ζητήστε από τον διαχειριστή να ξεκινήσει την υπηρεσία. Το "
        "παράθυρο θα συνδεθεί ξανά μόνο του.",
    },
    "channel.service_not_genuine": {
        "en": "Another program pretends to be the POSPal License service. Nothing was sent to it.",
        "el": "Ένα άλλο πρόγραμμα παριστάνει την υπηρεσία αδειών POSPal. Δεν στάλθηκε τίποτα σε αυτό.",
    },
    "channel.service_not_genuine.fix": {
        "en": "Ask the administrator to restart the computer and check it for unwanted programs.",
        "el": "Ζητήστε από τον διαχειριστή να επανεκκινήσει τον υπολογιστή και να τον ελέγξει για "
        "ανεπιθύμητα προγράμματα.",
    },
    # The owner's confirmation (issue 27): a step on the way to billing or terminal changes, never an error.
    "owner.title": {
        "en": "Confirm you are the owner",
        "el": "Επιβεβαιώστε ότι είστε ο ιδιοκτήτης",
    },
    "owner.step": {
        "en": "Billing and terminal changes are confirmed by the owner. Step 1: send a code to the "
        "owner's e-mail. Step 2: enter it here. This PC then allows them for 15 minutes.",
        "el": "Η χρέωση και οι αλλαγές τερματικών επιβεβαιώνονται από τον ιδιοκτήτη. Βήμα 1: στείλτε "
        "κωδικό στο email του ιδιοκτήτη. Βήμα 2: πληκτρολογήστε τον εδώ. Ο υπολογιστής τις επιτρέπει "
        "μετά για 15 λεπτά.",
    },
    "owner.next": {
        "en": "Next step: the owner confirms with a code from their e-mail.",
        "el": "Επόμενο βήμα: ο ιδιοκτήτης επιβεβαιώνει με κωδικό από το email του.",
    },
    "owner.cli": {
        "en": "Next step: the owner confirms. Step 1 of 2: a 6-digit code goes to {email}. "
        "Step 2 of 2: type it below.",
        "el": "Επόμενο βήμα: επιβεβαίωση από τον ιδιοκτήτη. Βήμα 1 από 2: ένας 6ψήφιος κωδικός πηγαίνει "
        "στο {email}. Βήμα 2 από 2: πληκτρολογήστε τον παρακάτω.",
    },
    # Activation by file: where the request file goes, named with this agent's own server.
    "offline.request_saved": {
        "en": "Wrote {path}. On any PC or phone with internet, open {url}, confirm your e-mail and upload "
        "this file. Then import the license file it gives you with "
        "`pospal-agent activate --offline-response FILE`.",
        "el": "Γράφτηκε το {path}. Σε οποιονδήποτε υπολογιστή ή κινητό με διαδίκτυο, ανοίξτε τη διεύθυνση "
        "{url}, επιβεβαιώστε το email σας και ανεβάστε αυτό το αρχείο. Μετά εισαγάγετε το αρχείο άδειας "
        "που θα σας δώσει με `pospal-agent activate --offline-response FILE`.",
    },
    # The agent's own refusals.
    "error.checkout_expired": {
        "en": "The checkout expired before payment. Start the purchase again.",
        "el": "Η πληρωμή έληξε πριν ολοκληρωθεί. Ξεκινήστε ξανά την αγορά.",
    },
    "error.not_activated": {
        "en": "This PC is not activated. Start a trial or activate it first.",
        "el": "Ο υπολογιστής δεν έχει ενεργοποιηθεί. Ξεκινήστε δοκιμή ή ενεργοποιήστε τον πρώτα.",
    },
    "error.offline_file_unreadable": {
        "en": "This is not a POSPal license file.",
        "el": "Αυτό δεν είναι αρχείο άδειας POSPal.",
    },
    "error.offline_file_invalid": {
        "en": "The license file could not be verified (it was changed or not issued by POSPal).",
        "el": "Το αρχείο άδειας δεν επαληθεύτηκε (έχει αλλοιωθεί ή δεν εκδόθηκε από το POSPal).",
    },
    "error.offline_file_other_machine": {
        "en": "This license file was made for another computer.",
        "el": "Αυτό το αρχείο άδειας δημιουργήθηκε για άλλον υπολογιστή.",
    },
    "error.offline_file_expired": {
        "en": "This license file has already ended. Make a new activation request.",
        "el": "Αυτό το αρχείο άδειας έχει ήδη λήξει. Δημιουργήστε νέο αίτημα ενεργοποίησης.",
    },
    "error.offline_file_older": {
        "en": "This license file is older than the license this PC already has.",
        "el": "Αυτό το αρχείο άδειας είναι παλαιότερο από την άδεια που έχει ήδη ο υπολογιστής.",
    },
    # Giving a license file up (offline deactivation): the CLI's `deactivate --offline-file` and the window.
    "offline.give_up": {"en": "Give up this license file…", "el": "Παράδοση αυτού του αρχείου άδειας…"},
    "offline.give_up.title": {"en": "Give up the license file?", "el": "Παράδοση του αρχείου άδειας;"},
    "offline.give_up.text": {
        "en": "This PC stops being licensed at once and the POS stops taking orders here. A deactivation "
        "file is saved; uploading it on the server's page frees this PC's seat for another one.",
        "el": "Ο υπολογιστής παύει αμέσως να έχει άδεια και το POS σταματά να δέχεται παραγγελίες εδώ. "
        "Αποθηκεύεται ένα αρχείο απενεργοποίησης· η μεταφόρτωσή του στη σελίδα του διακομιστή "
        "ελευθερώνει τη θέση του για άλλον υπολογιστή.",
    },
    "offline.give_up.yes": {"en": "Give it up", "el": "Παράδοση"},
    "offline.give_up.unwritten": {
        "en": "Could not write {path}. This PC's license file is given up; its deactivation file is kept: "
        "press Give up again to save it somewhere else.",
        "el": "Δεν ήταν δυνατή η εγγραφή: {path}. Το αρχείο άδειας παραδόθηκε· το αρχείο απενεργοποίησης "
        "κρατιέται: πατήστε ξανά Παράδοση για να το αποθηκεύσετε αλλού.",
    },
    "offline.given_up": {
        "en": "Wrote {path}; this PC's license file is given up. Upload this deactivation file on {url} "
        "to free its seat now; otherwise the seat stays taken until the license file ends.",
        "el": "Γράφτηκε το {path}· το αρχείο άδειας αυτού του υπολογιστή παραδόθηκε. Ανεβάστε αυτό το αρχείο "
        "απενεργοποίησης στο {url} για να ελευθερωθεί η θέση του τώρα· αλλιώς η θέση μένει "
        "πιασμένη έως τη λήξη του αρχείου άδειας.",
    },
}

# (key, language) pairs a lookup had to fall back for; a set, so it stays small however often it happens.
_FALLBACKS: set[tuple[str, str]] = set()


def register(entries: Mapping[str, Mapping[str, str]]) -> None:
    """Add or replace catalogue entries; each must have a text for every language.

    Raises ValueError naming the key when a language is missing, so a half-translated string is caught
    at import time rather than shown to a Greek-speaking owner in English.
    """
    for key, texts in entries.items():
        missing = [lang for lang in LANGUAGES if not isinstance(texts.get(lang), str)]
        if missing:
            raise ValueError(f"message {key!r} lacks {', '.join(missing)}")
        _CATALOGUE[key] = {lang: texts[lang] for lang in LANGUAGES}


def text(key: str, lang: str = DEFAULT_LANGUAGE, **kw: object) -> str:
    """The text for `key` in `lang` (English when the language is unknown), formatted with `kw`.

    An unknown key returns the key itself, so a missing string is visible but never crashes the agent.
    """
    entry = _CATALOGUE.get(key)
    if entry is None:
        _FALLBACKS.add((key, lang))
        return key
    template = entry.get(lang)
    if template is None:
        _FALLBACKS.add((key, lang))
        template = entry[DEFAULT_LANGUAGE]
    return template.format(**kw) if kw else template


def fallbacks() -> list[tuple[str, str]]:
    """Every (key, language) looked up so far that was missing and fell back (sorted)."""
    return sorted(_FALLBACKS)


def clear_fallbacks() -> None:
    """Forget the recorded fallbacks (tests call it before exercising a screen)."""
    _FALLBACKS.clear()


def has(key: str) -> bool:
    """Whether the catalogue holds `key`."""
    return key in _CATALOGUE


def keys() -> list[str]:
    """Every key in the catalogue."""
    return list(_CATALOGUE)


def days(n: int, lang: str = DEFAULT_LANGUAGE) -> str:
    """ "1 day" / "3 days" ("1 ημέρα" / "3 ημέρες")."""
    return text("days.one" if n == 1 else "days.other", lang, n=n)


def date(year: int, month: int, day: int, lang: str = DEFAULT_LANGUAGE) -> str:
    """A date as people write it: "26 Nov 2026" in English, "26/11/2026" in Greek (no locale needed)."""
    if lang == "el":
        return f"{day:02d}/{month:02d}/{year}"
    return f"{day} {_MONTHS_EN[month - 1]} {year}"
