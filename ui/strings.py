"""Every text the tray app shows, in English and Greek, and the UI's current language.

The texts are registered into the one message catalogue, ``agent.messages``, so the agent's status
messages and the UI's words come from the same place. Widgets never hold literals: they call ``t(key)``
and re-read their texts when ``language.language_changed`` fires, which is how switching language in the
window re-translates everything live.
"""

from __future__ import annotations

from PySide6.QtCore import QLocale, QObject, Signal

from agent import messages

LANGUAGES = ("en", "el")
LANGUAGE_NAMES = {"en": "English", "el": "Ελληνικά"}

_ENTRIES: dict[str, dict[str, str]] = {
    # Product and generic words.
    "ui.app_name": {"en": "POSPal License Agent", "el": "POSPal License Agent"},
    "ui.tip_prefix": {"en": "POSPal", "el": "POSPal"},
    "ui.days.one": {"en": "{n} day", "el": "{n} ημέρα"},
    "ui.days.other": {"en": "{n} days", "el": "{n} ημέρες"},
    "ui.never": {"en": "Never", "el": "Ποτέ"},
    "ui.none": {"en": "—", "el": "—"},
    "ui.cancel": {"en": "Cancel", "el": "Ακύρωση"},
    "ui.back": {"en": "Back", "el": "Πίσω"},
    "ui.busy": {"en": "Working…", "el": "Παρακαλώ περιμένετε…"},
    # State headlines: what staff read first.
    "ui.state.licensed_active": {"en": "Licensed", "el": "Ενεργή άδεια"},
    "ui.state.trial_active": {"en": "Free trial", "el": "Δωρεάν δοκιμή"},
    "ui.state.licensed_grace": {"en": "Licensed, offline", "el": "Ενεργή άδεια, εκτός σύνδεσης"},
    "ui.state.licensed_renewal_required": {"en": "Payment failed", "el": "Η πληρωμή απέτυχε"},
    "ui.state.payment_action_required": {
        "en": "Payment needs confirming",
        "el": "Η πληρωμή χρειάζεται επιβεβαίωση",
    },
    "ui.state.licensed_cancelled": {"en": "Subscription ended", "el": "Η συνδρομή έληξε"},
    "ui.state.trial_expired": {"en": "Trial ended", "el": "Η δοκιμή έληξε"},
    "ui.state.license_missing": {"en": "Not activated", "el": "Μη ενεργοποιημένο"},
    "ui.state.license_error": {"en": "License problem", "el": "Πρόβλημα άδειας"},
    # One sentence per state: what is wrong and what to do.
    "ui.detail.offline_license": {
        "en": "This terminal can take orders. Offline license until {date}: renew it by file before then.",
        "el": "Αυτό το τερματικό μπορεί να δέχεται παραγγελίες. Άδεια χωρίς σύνδεση έως {date}: ανανεώστε "
        "την με αρχείο πριν από τότε.",
    },
    "ui.detail.licensed_active": {
        "en": "This terminal can take orders.",
        "el": "Αυτό το τερματικό μπορεί να δέχεται παραγγελίες.",
    },
    "ui.detail.cancel_scheduled": {
        "en": "This terminal can take orders. The subscription ends in {days}.",
        "el": "Αυτό το τερματικό μπορεί να δέχεται παραγγελίες. Η συνδρομή λήγει σε {days}.",
    },
    "ui.detail.trial_active": {
        "en": "This terminal can take orders. The free trial runs until {date}.",
        "el": "Αυτό το τερματικό μπορεί να δέχεται παραγγελίες. Η δωρεάν δοκιμή διαρκεί έως {date}.",
    },
    "ui.detail.provisional_trial": {
        "en": "This terminal can take orders. Connect it to the internet within {days} to confirm the trial.",
        "el": "Αυτό το τερματικό μπορεί να δέχεται παραγγελίες. Συνδέστε το στο διαδίκτυο μέσα σε {days} "
        "για να επιβεβαιωθεί η δοκιμή.",
    },
    "ui.detail.payment_action_required": {
        "en": "Orders work for {days} more. The owner should confirm the payment with the bank "
        "(Confirm payment); the card is fine.",
        "el": "Οι παραγγελίες λειτουργούν για {days} ακόμη. Ο ιδιοκτήτης πρέπει να επιβεβαιώσει την πληρωμή "
        "στην τράπεζα («Επιβεβαίωση πληρωμής»)· η κάρτα είναι εντάξει.",
    },
    "ui.detail.payment_grace_ended": {
        "en": "Orders are stopped: the payment is overdue. The owner should update the card in "
        "Manage billing.",
        "el": "Οι παραγγελίες έχουν σταματήσει: η πληρωμή καθυστερεί. Ο ιδιοκτήτης πρέπει να ενημερώσει "
        "την κάρτα από τη Διαχείριση χρέωσης.",
    },
    "ui.detail.licensed_grace": {
        "en": "Orders work, but this PC has not reached the POSPal cloud lately. "
        "Connect it to the internet within {days}.",
        "el": "Οι παραγγελίες λειτουργούν, αλλά ο υπολογιστής δεν έχει συνδεθεί πρόσφατα στο POSPal cloud. "
        "Συνδέστε τον στο διαδίκτυο μέσα σε {days}.",
    },
    "ui.detail.licensed_renewal_required": {
        "en": "Orders work for {days} more. The owner should update the payment card.",
        "el": "Οι παραγγελίες λειτουργούν για {days} ακόμη. Ο ιδιοκτήτης πρέπει να ενημερώσει "
        "την κάρτα πληρωμής.",
    },
    "ui.detail.licensed_cancelled": {
        "en": "Orders are stopped. The owner can subscribe again from this window.",
        "el": "Οι παραγγελίες έχουν σταματήσει. Ο ιδιοκτήτης μπορεί να εγγραφεί ξανά από αυτό το παράθυρο.",
    },
    "ui.detail.trial_expired": {
        "en": "Orders are stopped. Buy a subscription to keep using POSPal.",
        "el": "Οι παραγγελίες έχουν σταματήσει. Αγοράστε συνδρομή για να συνεχίσετε με το POSPal.",
    },
    "ui.detail.license_missing": {
        "en": "Start a free trial or activate this PC to take orders.",
        "el": "Ξεκινήστε δωρεάν δοκιμή ή ενεργοποιήστε αυτόν τον υπολογιστή για να δέχεστε παραγγελίες.",
    },
    "ui.detail.license_error": {
        "en": "Orders are stopped. Press Sync now, or activate this PC again.",
        "el": "Οι παραγγελίες έχουν σταματήσει. Πατήστε «Συγχρονισμός τώρα» ή ενεργοποιήστε ξανά "
        "τον υπολογιστή.",
    },
    "ui.tip.days_left": {"en": "{days} left", "el": "απομένουν {days}"},
    "ui.tip.until": {"en": "until {date}", "el": "έως {date}"},
    # Status card labels.
    "ui.card.plan": {"en": "Plan", "el": "Πρόγραμμα"},
    "ui.card.renews_on": {"en": "Renews on", "el": "Ανανέωση"},
    "ui.card.ends_on": {"en": "Ends on", "el": "Λήξη"},
    "ui.card.orders_stop_on": {"en": "Orders stop on", "el": "Διακοπή παραγγελιών"},
    "ui.card.days_left": {"en": "Days left", "el": "Ημέρες που απομένουν"},
    "ui.card.last_sync": {"en": "Last sync", "el": "Τελευταίος συγχρονισμός"},
    "ui.card.terminal": {"en": "Terminal", "el": "Τερματικό"},
    "ui.card.account": {"en": "Account", "el": "Λογαριασμός"},
    "ui.plan.trial": {"en": "Free trial", "el": "Δωρεάν δοκιμή"},
    "ui.plan.pospal-monthly": {"en": "Monthly", "el": "Μηνιαίο"},
    "ui.plan.seats": {"en": "{plan}, {n} terminals", "el": "{plan}, {n} τερματικά"},
    # Actions (window buttons and tray menu).
    "ui.action.open": {"en": "Open POSPal Agent", "el": "Άνοιγμα POSPal Agent"},
    "ui.action.sync": {"en": "Sync now", "el": "Συγχρονισμός τώρα"},
    "ui.action.syncing": {"en": "Syncing…", "el": "Συγχρονισμός…"},
    "ui.action.trial": {"en": "Start free trial", "el": "Έναρξη δωρεάν δοκιμής"},
    "ui.action.buy": {"en": "Buy subscription", "el": "Αγορά συνδρομής"},
    "ui.action.manage": {"en": "Manage subscription", "el": "Διαχείριση συνδρομής"},
    "ui.action.billing": {"en": "Manage billing", "el": "Διαχείριση χρέωσης"},
    "ui.action.fix_card": {"en": "Update payment card", "el": "Ενημέρωση κάρτας"},
    "ui.action.confirm_payment": {"en": "Confirm payment", "el": "Επιβεβαίωση πληρωμής"},
    "ui.action.activate": {"en": "Activate this PC", "el": "Ενεργοποίηση υπολογιστή"},
    "ui.action.move": {"en": "Move license", "el": "Μεταφορά άδειας"},
    "ui.action.pause": {"en": "Pause for the season", "el": "Παύση για τη σεζόν"},
    "ui.action.resume": {"en": "Resume now", "el": "Επαναφορά τώρα"},
    "ui.pause.done": {
        "en": "Paused until you resume: nothing is charged and every terminal keeps its place.",
        "el": "Σε παύση μέχρι να την επαναφέρετε: δεν χρεώνεται τίποτα και κάθε τερματικό κρατά τη θέση του.",
    },
    "ui.resume.done": {
        "en": "Resumed: every terminal takes orders again within a minute.",
        "el": "Επαναφέρθηκε: κάθε τερματικό δέχεται ξανά παραγγελίες μέσα σε ένα λεπτό.",
    },
    "ui.action.quit": {"en": "Quit", "el": "Έξοδος"},
    "ui.action.diagnostics": {"en": "Diagnostics", "el": "Διαγνωστικά"},
    # Quit confirmation.
    "ui.quit.title": {"en": "Quit POSPal License Agent?", "el": "Έξοδος από το POSPal License Agent;"},
    "ui.quit.text": {
        "en": "The POS checks its license through this agent. If you quit, the till may stop taking "
        "orders until the agent runs again.",
        "el": "Το POS ελέγχει την άδειά του μέσω αυτού του προγράμματος. Αν το κλείσετε, το ταμείο μπορεί "
        "να σταματήσει να δέχεται παραγγελίες μέχρι να ξεκινήσει ξανά.",
    },
    "ui.quit.yes": {"en": "Quit", "el": "Έξοδος"},
    "ui.quit.no": {"en": "Keep running", "el": "Να συνεχίσει"},
    # Buy flow.
    "ui.buy.title": {"en": "Buy a subscription", "el": "Αγορά συνδρομής"},
    "ui.buy.intro": {
        "en": "You pay on a secure checkout page in your browser. This window activates the PC by "
        "itself when the payment is done.",
        "el": "Πληρώνετε σε ασφαλή σελίδα πληρωμής στο πρόγραμμα περιήγησης. Το παράθυρο ενεργοποιεί "
        "τον υπολογιστή μόνο του μόλις ολοκληρωθεί η πληρωμή.",
    },
    "ui.field.email": {"en": "Email", "el": "Email"},
    "ui.field.restaurant": {"en": "Restaurant name", "el": "Όνομα καταστήματος"},
    "ui.field.code": {"en": "Code", "el": "Κωδικός"},
    "ui.buy.continue": {"en": "Continue to payment", "el": "Συνέχεια στην πληρωμή"},
    "ui.wait.title": {"en": "Waiting for payment…", "el": "Αναμονή πληρωμής…"},
    "ui.wait.text": {
        "en": "Finish the payment in your browser. This window updates by itself when it is done.",
        "el": "Ολοκληρώστε την πληρωμή στο πρόγραμμα περιήγησης. Το παράθυρο θα ενημερωθεί μόνο του.",
    },
    "ui.wait.reopen": {"en": "Open payment page again", "el": "Άνοιγμα σελίδας πληρωμής ξανά"},
    "ui.wait.cancelled": {"en": "Stopped waiting for the payment.", "el": "Η αναμονή πληρωμής σταμάτησε."},
    "ui.buy.done": {
        "en": "Payment received. This PC is licensed.",
        "el": "Η πληρωμή έγινε. Ο υπολογιστής έχει άδεια.",
    },
    # Activate flow.
    "ui.activate.title": {"en": "Activate this PC", "el": "Ενεργοποίηση υπολογιστή"},
    "ui.activate.intro": {
        "en": "Enter the email of the subscription. We will email you a 6-digit code.",
        "el": "Εισαγάγετε το email της συνδρομής. Θα σας στείλουμε εξαψήφιο κωδικό.",
    },
    "ui.activate.send": {"en": "Send code", "el": "Αποστολή κωδικού"},
    "ui.activate.code_intro": {
        "en": "Enter the code we sent to {email}.",
        "el": "Εισαγάγετε τον κωδικό που στείλαμε στο {email}.",
    },
    "ui.activate.submit": {"en": "Activate", "el": "Ενεργοποίηση"},
    "ui.activate.resend": {"en": "Send a new code", "el": "Νέος κωδικός"},
    "ui.activate.done": {"en": "This PC is activated.", "el": "Ο υπολογιστής ενεργοποιήθηκε."},
    "ui.activate.by_file": {
        "en": "No internet here? Activate by file",
        "el": "Χωρίς διαδίκτυο; Ενεργοποίηση με αρχείο",
    },
    # Activation by file (ui/offline.py).
    "ui.offline.title": {"en": "Activate by file", "el": "Ενεργοποίηση με αρχείο"},
    "ui.offline.intro": {
        "en": "For a PC without internet. 1. Save the activation request to a USB stick. 2. On any phone or "
        "PC with internet, open {url}, confirm your e-mail and upload the file. 3. Bring back the "
        "license file it gives you and import it here. Renew the same way before it ends.",
        "el": "Για υπολογιστή χωρίς διαδίκτυο. 1. Αποθηκεύστε το αίτημα ενεργοποίησης σε USB. 2. Σε "
        "οποιοδήποτε κινητό ή υπολογιστή με διαδίκτυο, ανοίξτε τη διεύθυνση {url}, επιβεβαιώστε το "
        "email σας και ανεβάστε το αρχείο. 3. Φέρτε πίσω το αρχείο άδειας και εισαγάγετέ το εδώ. "
        "Ανανεώστε με τον ίδιο τρόπο πριν λήξει.",
    },
    "ui.offline.save": {"en": "Save activation request…", "el": "Αποθήκευση αιτήματος…"},
    "ui.offline.import": {"en": "Import license file…", "el": "Εισαγωγή αρχείου άδειας…"},
    "ui.offline.saved": {
        "en": "Saved {path}. Now open {url} on any phone or PC with internet and upload it.",
        "el": "Αποθηκεύτηκε: {path}. Τώρα ανοίξτε τη διεύθυνση {url} σε οποιοδήποτε κινητό ή υπολογιστή με "
        "διαδίκτυο και ανεβάστε το.",
    },
    "ui.offline.unwritable": {"en": "Could not write {path}.", "el": "Δεν ήταν δυνατή η εγγραφή: {path}."},
    "ui.offline.unreadable": {
        "en": "Could not read the file ({detail}).",
        "el": "Δεν ήταν δυνατή η ανάγνωση του αρχείου ({detail}).",
    },
    "ui.offline.imported": {
        "en": "The offline license is active.",
        "el": "Η άδεια χωρίς σύνδεση ενεργοποιήθηκε.",
    },
    "ui.trial.done": {"en": "Your free trial has started.", "el": "Η δωρεάν δοκιμή ξεκίνησε."},
    # Trial flow.
    "ui.trial.title": {"en": "Start the 30-day free trial", "el": "Δωρεάν δοκιμή 30 ημερών"},
    "ui.trial.intro": {
        "en": "The trial starts on this PC now. Leave an email if you would like a reminder 3 days "
        "before it ends.",
        "el": "Η δοκιμή ξεκινά τώρα σε αυτόν τον υπολογιστή. Αφήστε ένα email αν θέλετε υπενθύμιση "
        "3 ημέρες πριν λήξει.",
    },
    "ui.trial.start": {"en": "Start trial", "el": "Έναρξη δοκιμής"},
    "ui.field.email_optional": {"en": "Email (optional)", "el": "Email (προαιρετικό)"},
    "ui.sync.done": {"en": "Synced with the POSPal cloud.", "el": "Ο συγχρονισμός ολοκληρώθηκε."},
    # Move the license.
    "ui.move.title": {"en": "Move the license", "el": "Μεταφορά άδειας"},
    "ui.move.intro": {
        "en": "To use this license on another PC, deactivate this one, or remove an old terminal.",
        "el": "Για να χρησιμοποιήσετε την άδεια σε άλλον υπολογιστή, απενεργοποιήστε αυτόν ή αφαιρέστε "
        "ένα παλιό τερματικό.",
    },
    "ui.move.deactivate": {"en": "Deactivate this PC", "el": "Απενεργοποίηση υπολογιστή"},
    "ui.move.list": {"en": "Show terminals", "el": "Εμφάνιση τερματικών"},
    "ui.move.remove": {"en": "Remove", "el": "Αφαίρεση"},
    "ui.move.this_pc": {"en": "this PC", "el": "αυτός ο υπολογιστής"},
    "ui.move.last_seen": {"en": "last seen {when}", "el": "τελευταία σύνδεση {when}"},
    "ui.move.removed": {"en": "Terminal removed.", "el": "Το τερματικό αφαιρέθηκε."},
    "ui.move.deactivated": {"en": "This PC is deactivated.", "el": "Ο υπολογιστής απενεργοποιήθηκε."},
    "ui.deactivate.title": {"en": "Deactivate this PC?", "el": "Απενεργοποίηση υπολογιστή;"},
    "ui.deactivate.text": {
        "en": "This PC stops taking orders at once. Its seat becomes free for another PC.",
        "el": "Ο υπολογιστής σταματά αμέσως να δέχεται παραγγελίες. Η θέση του ελευθερώνεται για άλλον.",
    },
    "ui.deactivate.yes": {"en": "Deactivate", "el": "Απενεργοποίηση"},
    "ui.remove.title": {"en": "Remove {name}?", "el": "Αφαίρεση του {name};"},
    "ui.remove.text": {
        "en": "That terminal stops taking orders at its next sync.",
        "el": "Το τερματικό θα σταματήσει να δέχεται παραγγελίες στον επόμενο συγχρονισμό.",
    },
    # Refusals and failures.
    "ui.error.seats_full": {
        "en": "All terminals on this subscription are in use. Remove one below, or add a terminal "
        "in Manage billing.",
        "el": "Όλα τα τερματικά της συνδρομής είναι σε χρήση. Αφαιρέστε ένα παρακάτω ή προσθέστε "
        "τερματικό από τη Διαχείριση χρέωσης.",
    },
    "ui.error.bad_code": {
        "en": "That code is not right. Check the latest email and try again.",
        "el": "Ο κωδικός δεν είναι σωστός. Ελέγξτε το πιο πρόσφατο email και δοκιμάστε ξανά.",
    },
    "ui.error.code_expired": {
        "en": "That code has expired. Ask for a new one.",
        "el": "Ο κωδικός έληξε. Ζητήστε νέο.",
    },
    "ui.error.too_many_attempts": {
        "en": "Too many wrong tries. Ask for a new code.",
        "el": "Πάρα πολλές λάθος προσπάθειες. Ζητήστε νέο κωδικό.",
    },
    "ui.error.rate_limited": {
        "en": "Too many tries. Wait {wait} and try again.",
        "el": "Πάρα πολλές προσπάθειες. Περιμένετε {wait} και δοκιμάστε ξανά.",
    },
    "ui.error.rate_limited.soon": {
        "en": "Too many tries. Wait a few minutes and try again.",
        "el": "Πάρα πολλές προσπάθειες. Περιμένετε λίγα λεπτά και δοκιμάστε ξανά.",
    },
    "ui.wait.minutes": {"en": "{n} min", "el": "{n} λεπτά"},
    "ui.error.offline": {
        "en": "Cannot reach the POSPal cloud. Check the internet connection and try again.",
        "el": "Δεν υπάρχει σύνδεση με το POSPal cloud. Ελέγξτε τη σύνδεση στο διαδίκτυο και δοκιμάστε ξανά.",
    },
    "ui.error.no_subscription": {
        "en": "No subscription was found for this email.",
        "el": "Δεν βρέθηκε συνδρομή για αυτό το email.",
    },
    "ui.error.not_found": {
        "en": "Not found. It may have been removed already.",
        "el": "Δεν βρέθηκε. Ίσως έχει ήδη αφαιρεθεί.",
    },
    "ui.error.invalid_request": {
        "en": "Please check what you entered.",
        "el": "Ελέγξτε τα στοιχεία που εισαγάγατε.",
    },
    "ui.error.unknown_machine": {
        "en": "The POSPal cloud does not know this PC. Activate it again.",
        "el": "Το POSPal cloud δεν αναγνωρίζει αυτόν τον υπολογιστή. Ενεργοποιήστε τον ξανά.",
    },
    "ui.error.replay": {
        "en": "The request was refused as a duplicate. Try again.",
        "el": "Το αίτημα απορρίφθηκε ως διπλό. Δοκιμάστε ξανά.",
    },
    "ui.error.checkout_expired": {
        "en": "The payment page expired. Start again.",
        "el": "Η σελίδα πληρωμής έληξε. Ξεκινήστε ξανά.",
    },
    "ui.error.generic": {"en": "Something went wrong: {detail}", "el": "Κάτι πήγε στραβά: {detail}"},
    "ui.error.email": {"en": "Enter a valid email address.", "el": "Εισαγάγετε έγκυρη διεύθυνση email."},
    "ui.error.restaurant": {
        "en": "Enter the restaurant name.",
        "el": "Εισαγάγετε το όνομα του καταστήματος.",
    },
    "ui.error.code_format": {"en": "The code has 6 digits.", "el": "Ο κωδικός έχει 6 ψηφία."},
    # Diagnostics.
    "ui.diag.title": {"en": "Diagnostics", "el": "Διαγνωστικά"},
    "ui.diag.sources": {"en": "Fingerprint sources", "el": "Πηγές αποτυπώματος"},
    "ui.diag.ok": {"en": "works", "el": "λειτουργεί"},
    "ui.diag.missing": {"en": "unavailable", "el": "μη διαθέσιμη"},
    "ui.diag.last_result": {"en": "Last sync result", "el": "Τελευταίος συγχρονισμός"},
    "ui.diag.data_dir": {"en": "Data folder", "el": "Φάκελος δεδομένων"},
    "ui.diag.server": {"en": "Server", "el": "Διακομιστής"},
    "ui.diag.version": {"en": "Version", "el": "Έκδοση"},
    "ui.diag.machine": {"en": "Machine ID", "el": "Αναγνωριστικό υπολογιστή"},
    "ui.diag.fingerprint_match": {"en": "Fingerprint check", "el": "Έλεγχος αποτυπώματος"},
    "ui.diag.clone_suspected": {"en": "Cloned PC?", "el": "Κλωνοποιημένος υπολογιστής;"},
    "ui.diag.proxy": {"en": "Proxy", "el": "Διακομιστής μεσολάβησης"},
    "ui.diag.trust_store": {"en": "Certificates", "el": "Πιστοποιητικά"},
    "ui.diag.copy": {"en": "Copy support report", "el": "Αντιγραφή αναφοράς υποστήριξης"},
    "ui.diag.copied": {
        "en": "Support report copied. Paste it into your email to support.",
        "el": "Η αναφορά αντιγράφηκε. Επικολλήστε τη στο email προς την υποστήριξη.",
    },
    # Settings row.
    "ui.settings.autostart": {"en": "Start at login", "el": "Εκκίνηση κατά τη σύνδεση"},
    "ui.settings.language": {"en": "Language", "el": "Γλώσσα"},
    "ui.autostart.all_users_tip": {
        "en": "Set for all users of this PC by the installer.",
        "el": "Ορίστηκε για όλους τους χρήστες αυτού του υπολογιστή από το πρόγραμμα εγκατάστασης.",
    },
    "ui.autostart.all_users_off": {
        "en": "It still starts: the installer set it for all users of this PC. Only an administrator can "
        "turn that off (Task Manager, Startup apps).",
        "el": "Εξακολουθεί να ξεκινά: ορίστηκε για όλους τους χρήστες κατά την εγκατάσταση. Μόνο ένας "
        "διαχειριστής μπορεί να το απενεργοποιήσει (Διαχείριση εργασιών, Εφαρμογές εκκίνησης).",
    },
    # Notifications.
    "ui.notify.title": {"en": "POSPal license: {headline}", "el": "Άδεια POSPal: {headline}"},
    "ui.single.already": {
        "en": "POSPal License Agent is already running.",
        "el": "Το POSPal License Agent εκτελείται ήδη.",
    },
}

messages.register(_ENTRIES)


def system_language(locale: QLocale | None = None) -> str:
    """The UI language the system locale asks for: Greek for a Greek locale, English otherwise."""
    locale = locale if locale is not None else QLocale.system()
    return "el" if locale.language() == QLocale.Language.Greek else "en"


class Language(QObject):
    """The UI's current language; widgets re-translate when ``language_changed`` fires."""

    language_changed = Signal(str)

    def __init__(self, code: str = "en") -> None:
        super().__init__()
        self._code = code if code in LANGUAGES else "en"

    @property
    def code(self) -> str:
        """The current language code, ``"en"`` or ``"el"``."""
        return self._code

    def set(self, code: str) -> None:
        """Switch the language and tell every widget, unless it is already the current one."""
        if code not in LANGUAGES or code == self._code:
            return
        self._code = code
        self.language_changed.emit(code)


language = Language()


def t(key: str, **kw: object) -> str:
    """The text for ``key`` in the current UI language, formatted with ``kw``."""
    return messages.text(key, language.code, **kw)


def days(n: int) -> str:
    """ "1 day" / "3 days" in the current language."""
    return t("ui.days.one" if n == 1 else "ui.days.other", n=n)


def ui_keys() -> list[str]:
    """Every key the UI registered; tests check each has real English and Greek text."""
    return list(_ENTRIES)
