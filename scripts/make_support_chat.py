"""Write alignkit's bundled ``support-chat`` preference pairs (alignkit/datasets/support-chat.jsonl).

A small dataset we wrote ourselves, on one clear criterion: a customer-support reply should be **concise,
polite and actionable**. Each prompt is a customer's question (trl's conversational format); the chosen reply
says what to do in one or two friendly sentences; each rejected reply fails the criterion one way: curt or
rude, polite but rambling, or polite but evasive. The ``group`` column is the topic and product, so the two
phrasings of one question never straddle the train / held-out / judge splits (the same topic asked about the
other product may: held-out questions are new questions on known topics, as a support desk's are).
Deterministic: rerun to regenerate byte for byte.

    python scripts/make_support_chat.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "alignkit" / "datasets" / "support-chat.jsonl"
PRODUCTS = ("the Nimbus app", "my Aurora account")

# topic: (two questions, the concise polite answer, the fix in a few words)
TOPICS = {
    "password": (("I forgot my password for {p}. How do I get back in?",
                  "Can't log in to {p}, password won't work."),
                 "Sorry about that! Tap 'Forgot password' on the login screen and follow the link we email "
                 "you.",
                 "tap 'Forgot password' and use the emailed link"),
    "refund": (("I want a refund for last month's charge on {p}.", "How do I get my money back for {p}?"),
               "Of course. Open Billing > History, choose the charge and press 'Request refund'; it takes "
               "3-5 days.",
               "request it under Billing > History"),
    "cancel": (("How do I cancel my subscription to {p}?", "Please stop renewing {p}, I want to cancel."),
               "You can cancel anytime in Settings > Subscription > Cancel. Thanks for being with us!",
               "cancel in Settings > Subscription"),
    "shipping": (("Where is my order? I bought it with {p} a week ago.",
                  "My package from {p} hasn't arrived yet."),
                 "Sorry for the wait! Your tracking link is under Orders; if it shows no movement in 2 days, "
                 "reply here.",
                 "check the tracking link under Orders"),
    "address": (("How can I change my delivery address on {p}?",
                 "I moved. Where do I update my address in {p}?"),
                "Happy to help: edit it in Profile > Addresses before the order ships.",
                "edit it in Profile > Addresses"),
    "email": (("I need to change the email on {p}.", "How do I update the email address linked to {p}?"),
              "Sure! Go to Profile > Email, enter the new address and confirm the code we send.",
              "change it in Profile > Email"),
    "delete": (("Please delete {p} and all my data.", "How do I permanently close {p}?"),
               "We're sorry to see you go. Settings > Privacy > Delete account removes everything within 30 "
               "days.",
               "use Settings > Privacy > Delete account"),
    "crash": (("{p} crashes every time I open it.", "Why does {p} keep closing on startup?"),
              "Sorry about the crashes! Please update to the latest version and restart your phone; that "
              "fixes most cases.",
              "update the app and restart"),
    "invoice": (("Where can I download an invoice from {p}?", "I need a receipt for a payment on {p}."),
                "Certainly. Invoices are under Billing > Invoices, each with a PDF download button.",
                "download it from Billing > Invoices"),
    "two_factor": (("How do I turn on two-factor login for {p}?", "Can I add extra security to {p}?"),
                   "Great idea! Enable it in Settings > Security > Two-factor and scan the code with your "
                   "authenticator.",
                   "enable it in Settings > Security"),
    "lost_phone": (("I lost my phone with {p} on it. What should I do?",
                    "My phone was stolen and {p} was logged in."),
                   "I'm sorry to hear that. Sign in on the web, open Security > Devices and log out the lost "
                   "phone.",
                   "log it out under Security > Devices"),
    "double_charge": (("I was charged twice for {p}.", "Why are there two identical charges from {p}?"),
                      "Sorry for the trouble! One is a temporary hold that drops off in 3 days; if not, "
                      "reply and we'll refund it.",
                      "wait 3 days for the hold to drop"),
    "upgrade": (("How do I upgrade {p} to the Pro plan?", "I'd like more features in {p}. How do I upgrade?"),
                "Glad you like it! Choose Settings > Plan > Pro; the price difference is prorated.",
                "pick Pro under Settings > Plan"),
    "notifications": (("{p} sends me too many notifications.", "How do I turn off alerts from {p}?"),
                      "Sorry for the noise! Settings > Notifications lets you switch off each kind.",
                      "switch them off in Settings > Notifications"),
    "language": (("Can I use {p} in Spanish?", "How do I change the language of {p}?"),
                 "Yes! Pick your language in Settings > Language; the app switches at once.",
                 "choose it in Settings > Language"),
    "export": (("How do I export my data from {p}?", "I want a copy of everything in {p}."),
               "Sure. Settings > Privacy > Export sends you a download link within an hour.",
               "use Settings > Privacy > Export"),
    "sync": (("{p} isn't syncing between my laptop and phone.",
              "My changes in {p} don't show on my other device."),
             "Sorry about that! Sign out and back in on both devices; sync resumes within a minute.",
             "sign out and back in on both devices"),
    "promo": (("My promo code doesn't work on {p}.", "Why was my discount code for {p} rejected?"),
              "Sorry! Codes apply at checkout and expire at month end; send me the code and I'll check it.",
              "enter it at checkout before it expires"),
    "dark_mode": (("Does {p} have a dark mode?", "How do I make {p} darker at night?"),
                  "It does! Turn it on in Settings > Appearance > Dark.",
                  "turn it on in Settings > Appearance"),
    "family": (("Can I share {p} with my family?", "How do I add my partner to {p}?"),
               "Yes! The Family plan covers 5 people; invite them from Settings > Family.",
               "invite them from Settings > Family"),
    "payment_method": (("How do I change the card I pay {p} with?",
                        "My card expired. How do I update it in {p}?"),
                       "Thanks for keeping it current! Update the card in Billing > Payment method.",
                       "update it in Billing > Payment method"),
    "slow": (("{p} is really slow today.", "Why is {p} taking forever to load?"),
             "Sorry for the slowness! We had a brief outage that is fixed now; please refresh and try again.",
             "refresh and try again"),
    "username": (("Can I change my username on {p}?", "How do I pick a new display name in {p}?"),
                 "Sure! Edit it in Profile > Username; you can change it once a month.",
                 "edit it in Profile > Username"),
    "return": (("How do I return an item I bought through {p}?", "I want to send back something from {p}."),
               "No problem. Start a return under Orders > Return item and print the free label.",
               "start it under Orders > Return item"),
    "locked": (("{p} says my account is locked.", "Why was I locked out of {p}?"),
               "Sorry about that! Too many sign-in attempts lock it for 15 minutes; then reset your password "
               "if needed.",
               "wait 15 minutes and reset the password"),
    "contact": (("How can I talk to a person about {p}?", "Is there a support phone number for {p}?"),
                "Of course. Call 0800 555 0100, 8am-8pm on weekdays, or use the chat in Help.",
                "call 0800 555 0100 or use Help chat"),
    "storage": (("{p} says my storage is full.", "How do I free up space in {p}?"),
                "Sorry for the hassle! Empty the Trash in Files, or add space in Settings > Storage.",
                "empty the Trash or add storage"),
    "offline": (("Can I use {p} without internet?", "Does {p} work offline on a plane?"),
                "Yes! Mark items 'Available offline' before you go and they open without a connection.",
                "mark items 'Available offline' first"),
    "trial": (("Will I be charged when the free trial of {p} ends?", "How long is the trial for {p}?"),
              "Good question! The trial lasts 14 days and we remind you 2 days before any charge.",
              "the trial is 14 days with a reminder"),
    "feedback": (("I have an idea to improve {p}.", "Where can I suggest a feature for {p}?"),
                 "Thank you, we love ideas! Share it under Help > Send feedback; the team reads every one.",
                 "send it under Help > Send feedback"),
    "gift": (("Can I buy {p} as a gift?", "How do I give {p} to a friend?"),
             "What a nice idea! Choose 'Buy as a gift' at checkout and we email your friend a code.",
             "choose 'Buy as a gift' at checkout"),
    "accessibility": (("The text in {p} is too small for me.", "How do I make {p} easier to read?"),
                      "Sorry about that! Raise the size in Settings > Accessibility > Text size.",
                      "raise it in Settings > Accessibility"),
}

RUDE = ("Obviously, {fix}. It's not hard.", "Read the help page next time: {fix}.", "Ugh, again? Just {fix}.",
        "That's on you. {Fix} and stop writing in.")
RAMBLING = ("Well, first of all, thank you so much for reaching out to us today, we truly appreciate every "
            "single one of our customers and we completely understand how frustrating these things can be, "
            "so after thinking it over from many angles, what I would probably suggest, if that is alright "
            "with you, is that you {fix}, which in most cases tends to work, although of course every "
            "situation is different.",
            "Hello and good day! I hope you are doing well. I have read your message very carefully, twice "
            "in fact, and I want you to know that we take this seriously and that your satisfaction matters "
            "to us a great deal, so, to answer your question, in general the usual approach, more or less, "
            "is to {fix}, and then see how it goes from there, and let us know, and so on.")
EVASIVE = ("Thanks for your message! We'll look into it at some point.",
           "Hmm, I'm not sure about that one. Maybe try again later?",
           "Thank you for contacting us. Your request is important to us.",
           "Good question! Different customers do different things.")


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def rows() -> list[dict]:
    rng = random.Random(0)
    out = []
    for topic, (questions, good, fix) in TOPICS.items():
        for product in PRODUCTS:
            for question in questions:
                prompt = [{"role": "user", "content": _sentence(question.format(p=product))}]
                bad = [rng.choice(RUDE).format(fix=fix, Fix=_sentence(fix)),
                       rng.choice(RAMBLING).format(fix=fix), rng.choice(EVASIVE)]
                for rejected in bad:
                    out.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": good}],
                                "rejected": [{"role": "assistant", "content": rejected}],
                                "group": f"{topic}/{PRODUCTS.index(product)}"})
    return out


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    data = rows()
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data))
    print(f"{OUT}: {len(data)} pairs, {len({r['prompt'][0]['content'] for r in data})} prompts, "
          f"{len(TOPICS)} topics")


if __name__ == "__main__":
    main()
