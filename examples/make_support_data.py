"""Generate examples/support_triage.jsonl: honed's own example dataset (deterministic, stdlib only).

Customer-support messages for Tallyboard, a fictional team-analytics SaaS, each with a JSON triage target:

    {"category": "billing", "priority": "high", "sentiment": "negative"}

The mapping is learnable from the text, the way a real triage policy would be:
- category comes from what the message is about (6 categories, several phrasings each);
- priority from urgency cues ("our whole team is blocked" -> high, "no rush" -> low); without a cue,
  problems (billing, account, bug, cancellation) are medium and questions or wishes are low;
- sentiment from tone ("this is ridiculous" -> negative, "love the product" -> positive), else neutral.
Messages vary in greeting, sign-off, slots (features, plans, amounts, browsers...), case and typos, and are
short (about 20-60 tokens) so a small model trains on them in minutes on a CPU.

Like real data it has a few quirks a data check should surface: 3 rows repeated exactly and 2 rows
sent again with "Hi," in front (near duplicates). Every row is valid.

    python examples/make_support_data.py            # writes examples/support_triage.jsonl
    python examples/make_support_data.py --rows 400 --seed 7 --out my.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path

SYSTEM_PROMPT = (
    "You triage customer support messages for Tallyboard. Reply with only a JSON object with keys "
    "category (billing, account, bug, feature_request, how_to, cancellation), priority (low, medium, high) "
    "and sentiment (negative, neutral, positive)."
)

SLOTS: dict[str, list[str]] = {
    "plan": ["Starter", "Team", "Business", "Pro"],
    "amount": ["$49", "$120", "$19.99", "$300", "€75", "$240"],
    "month": ["March", "April", "May", "June", "September", "October"],
    "seats": ["12", "25", "40", "8"],
    "fewer": ["9", "18", "30", "5"],
    "feature": ["dashboard", "weekly report", "CSV export", "goals page", "team view", "time tracker"],
    "integration": ["Slack", "Jira", "Google Sheets", "Salesforce", "GitHub", "HubSpot"],
    "browser": ["Chrome", "Safari", "Firefox", "Edge"],
    "code": ["500", "E-1042", "403", "timeout", "502"],
    "format": ["Excel", "PDF", "CSV", "Google Sheets"],
    "idp": ["Okta", "Azure AD", "Google Workspace"],
    "colleague": ["Maria", "Tom", "our old admin", "Priya", "James"],
    "order": ["#48213", "#51977", "#60342", "#39120"],
}

# Each category: several ways customers actually phrase it. {slots} are filled from SLOTS.
BODIES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for the {plan} plan this month. Can you refund the extra {amount}?",
        "Our {month} invoice shows {seats} seats but we only have {fewer} users.",
        "My card was declined at renewal but the {amount} charge still shows on my statement.",
        "We downgraded to {plan} last month and were still billed {amount}.",
        "Can you resend the receipt for order {order}? Our accountant needs it.",
        "Why did our bill go up to {amount}? Nobody on our side added seats.",
        "I need the {month} invoice with our VAT number on it, the current one is missing it.",
        "There's a charge of {amount} from Tallyboard that I don't recognise.",
    ],
    "account": [
        "I can't log in, the password reset email never arrives.",
        "I'm locked out of my account after too many wrong 2FA codes.",
        "Please make me the account owner, {colleague} left the company.",
        "SSO with {idp} keeps sending me back to the login page.",
        "I changed my work email and now I can't get into my account.",
        "My login stopped working after I enabled two-factor authentication.",
        "I lost my phone with the authenticator app, how do I get back in?",
        "Someone else seems to have access to my account, I got a login alert from another country.",
    ],
    "bug": [
        "The {feature} shows error {code} whenever I open it.",
        "The {feature} in our workspace has been blank since yesterday's update.",
        "The mobile app crashes as soon as I tap the {feature}.",
        "Charts on the {feature} don't load in {browser}, just a spinning wheel.",
        "Our {integration} integration stopped syncing two days ago.",
        "Numbers in the weekly report don't match what the dashboard shows.",
        "Clicking save on the {feature} does nothing, no error message either.",
        "The {feature} gives error {code} when I try it in {browser}.",
    ],
    "feature_request": [
        "It would be great if the {feature} could be exported to {format}.",
        "Please add a dark mode to the web app, my eyes would thank you.",
        "Any plans to support {integration}? We would use it every day.",
        "Could you add a way to schedule the weekly report to go out automatically?",
        "We'd love custom fields on projects so we can track budgets.",
        "Can you make the {feature} filterable by team? That would help a lot.",
        "Would be nice to have keyboard shortcuts in the {feature}.",
        "Feature idea: let admins pin a dashboard as the start page for everyone.",
    ],
    "how_to": [
        "How do I export the {feature} to {format}?",
        "Where can I find the API key for our workspace?",
        "Is there a way to share a dashboard with someone outside my team?",
        "How can I connect {integration} to Tallyboard?",
        "What's the best way to import our old data from a spreadsheet?",
        "How do I add a new admin to our workspace?",
        "Can I change the start of the week from Sunday to Monday somewhere?",
        "How do I set up the {feature} for a new team member?",
    ],
    "cancellation": [
        "Please cancel our subscription at the end of this billing period.",
        "We're moving to another tool, how do I close our account?",
        "Cancel my {plan} plan please, and delete our data afterwards.",
        "I want to cancel the trial before it turns into a paid {plan} plan.",
        "We don't use Tallyboard anymore, please stop the renewal.",
        "How do I cancel? I can't find the option anywhere in settings.",
        "Our company is closing, we need to cancel all {seats} seats.",
    ],
}

DEFAULT_PRIORITY = {
    "billing": "medium",
    "account": "medium",
    "bug": "medium",
    "cancellation": "medium",
    "feature_request": "low",
    "how_to": "low",
}

URGENCY: dict[str, list[str]] = {
    "high": [
        "This is urgent.",
        "Our whole team is blocked.",
        "We have a client demo in an hour!",
        "Please help ASAP.",
        "We go live tomorrow morning.",
        "My manager needs an answer today.",
        "Need this sorted today, it's critical.",
    ],
    "low": [
        "No rush on this.",
        "Whenever you get a chance.",
        "Not urgent at all.",
        "Low priority, just wondering.",
    ],
}

TONE: dict[str, list[str]] = {
    "negative": [
        "This is ridiculous.",
        "I'm really frustrated.",
        "Third time I'm writing about this.",
        "Honestly this is unacceptable.",
        "Very disappointed with the service lately.",
        "Not happy at all.",
        "Seriously, again?!",
    ],
    "positive": [
        "Love Tallyboard, by the way!",
        "Thanks so much, you folks are great.",
        "Big fan of the product.",
        "Really appreciate your help :)",
        "The new update looks fantastic.",
    ],
}

GREETINGS = ["", "", "Hi,", "Hello,", "Hey there,", "Hi team,", "Good morning,", "Hello support,"]
SIGN_OFFS = [
    "", "", "", "Thanks.", "Regards, Sam", "- Alex", "Cheers, Dana", "Best, K. Ito", "Sent from my phone"
]


def fill(template: str, rng: random.Random) -> str:
    values = {name: rng.choice(options) for name, options in SLOTS.items()}
    return template.format(**values)


def add_typo(text: str, rng: random.Random) -> str:
    """Swap two neighbouring letters or drop one, inside a random longer word (as people type)."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :] if rng.random() < 0.6 else w[:j] + w[j + 1 :]
    return " ".join(words)


def make_message(body: str, tone_text: str, urgency_text: str, rng: random.Random) -> str:
    """One message: greeting, maybe the tone cue first, the body, urgency and tone cues, sign-off."""
    tone_first = rng.random() < 0.4
    parts = [rng.choice(GREETINGS), tone_text if tone_first else "", fill(body, rng), urgency_text]
    parts += ["" if tone_first else tone_text, rng.choice(SIGN_OFFS)]
    text = " ".join(p for p in parts if p)
    for _ in range(rng.choice([0, 0, 0, 0, 0, 0, 1, 1, 2])):
        text = add_typo(text, rng)
    if rng.random() < 0.12:  # people who never use the shift key
        text = text.lower()
    if rng.random() < 0.1:
        text = text.rstrip(".!")
    return text


def make_example(rng: random.Random) -> tuple[str, dict[str, str], tuple[str, str, str]]:
    """A message, its target, and its recipe (body template and cues), used to keep recipes unique."""
    category = rng.choice(list(BODIES))
    priority_cue = rng.choices([None, "high", "low"], weights=[5, 3, 2])[0]
    tone = rng.choices([None, "negative", "positive"], weights=[5, 3, 2])[0]
    body = rng.choice(BODIES[category])
    tone_text = rng.choice(TONE[tone]) if tone else ""
    urgency_text = rng.choice(URGENCY[priority_cue]) if priority_cue else ""
    target = {
        "category": category,
        "priority": priority_cue or DEFAULT_PRIORITY[category],
        "sentiment": tone or "neutral",
    }
    return make_message(body, tone_text, urgency_text, rng), target, (body, tone_text, urgency_text)


def row(message: str, target: dict[str, str]) -> dict[str, object]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": message},
            {"role": "assistant", "content": json.dumps(target)},
        ]
    }


def near_copy(message: str) -> str:
    """The same message sent again with a greeting in front (a customer re-sending it, slightly edited).

    One added word keeps it a near duplicate under any reasonable measure (word or character shingles).
    """
    return "Hi, " + message[0].lower() + message[1:]


def generate(rows: int, seed: int) -> list[dict[str, object]]:
    """`rows` examples: unique messages plus 3 exact and 2 near duplicates placed at random positions."""
    rng = random.Random(seed)
    # One message per recipe: two messages differing only in greeting or a slot would be near duplicates,
    # and the dataset should hold only the few it declares.
    seen: set[tuple[str, str, str]] = set()
    examples: list[tuple[str, dict[str, str]]] = []
    while len(examples) < rows - 5:
        message, target, recipe = make_example(rng)
        if recipe not in seen:
            seen.add(recipe)
            examples.append((message, target))
    exact = [examples[i] for i in rng.sample(range(len(examples)), 3)]
    # Near copies of longer messages without a greeting, so the copy differs by one word in many.
    greetings = tuple(g.lower() for g in GREETINGS if g)
    plain = [
        i for i, (m, _) in enumerate(examples) if len(m.split()) >= 12 and not m.lower().startswith(greetings)
    ]
    near = [(near_copy(examples[i][0]), examples[i][1]) for i in rng.sample(plain, 2)]
    quirks = exact + near
    for quirk in quirks:
        examples.insert(rng.randrange(len(examples) + 1), quirk)
    return [row(m, t) for m, t in examples]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    """Write atomically (temp file, then rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "support_triage.jsonl")
    args = parser.parse_args()
    rows = generate(args.rows, args.seed)
    write_jsonl(args.out, rows)
    print(f"wrote {len(rows)} examples to {args.out}")


if __name__ == "__main__":
    main()
