#!/usr/bin/env python3
"""Writes questions.jsonl, the labelled grounding set (issue 13, "Quality, measured").

Deterministic: the same script always writes the same file (templates + `random.Random(SEED)`;
no clock, no environment). Every fact is invented (fictional places, people, products and
numbers), so a small model cannot answer from memory: the only way to the answer is the
documents. Each question has 3-6 documents of which exactly one holds the answer; the others are
distractors built to look relevant: the same entity with other attributes ("The largest port of
Zorblatt is ..."), other entities with the same attribute phrased the same way ("The capital of
Velmora is ..."), and the domain's vocabulary. The script checks the labels it writes: the answer
string occurs verbatim in the answer document and in no other document of that question.

Usage: python3 make_questions.py [--out questions.jsonl] [--check]
  --check  regenerate in memory and fail if the file on disk differs (a test of determinism).
"""

import argparse
import json
import pathlib
import random
import sys

SEED = 13
HERE = pathlib.Path(__file__).resolve().parent

# Syllables for invented names. Real names are avoided by construction: the generator refuses
# any name in REAL_WORDS, a short list of the real words the syllables can spell.
ONSETS = [
    "Zor",
    "Vel",
    "Quen",
    "Tar",
    "Bri",
    "Dra",
    "Kel",
    "Mor",
    "Fen",
    "Ost",
    "Pla",
    "Ryn",
    "Sav",
    "Thu",
    "Ulm",
    "Wex",
    "Yar",
    "Gal",
    "Hob",
    "Ixa",
    "Jor",
    "Lum",
    "Nev",
    "Cor",
]
CODAS = [
    "blatt",
    "mora",
    "moor",
    "nis",
    "vik",
    "dor",
    "wen",
    "quay",
    "stad",
    "ridge",
    "ova",
    "ith",
    "ane",
    "usk",
    "erra",
    "ond",
    "ax",
    "elle",
    "orn",
    "ippa",
]
FIRST = [
    "Ilsa",
    "Marek",
    "Odessa",
    "Tobin",
    "Priya",
    "Ansel",
    "Greta",
    "Hollis",
    "Juniper",
    "Caspian",
    "Liesel",
    "Orrin",
    "Saffi",
    "Teodor",
    "Wren",
    "Ysolde",
    "Bram",
    "Delphine",
]
LAST = [
    "Quarrington",
    "Vasquell",
    "Thornebury",
    "Okonkwe",
    "Halvorsen",
    "Pemberly",
    "Strakosch",
    "Mirelli",
    "Dunmore",
    "Ashgrove",
    "Kettleby",
    "Rourkewell",
    "Zabinsky",
    "Fennimore",
]
REAL_WORDS = {"Coronis", "Galond", "Morane", "Tarnis", "Moravik", "Mordor", "Morris", "Coronda"}


class Names:
    """Unique invented names: each call returns one not returned before."""

    def __init__(self, rng):
        self.rng = rng
        self.used = set()

    def _fresh(self, make):
        for _ in range(1000):
            name = make()
            if name not in self.used and name not in REAL_WORDS:
                self.used.add(name)
                return name
        raise RuntimeError("ran out of names")

    def place(self):
        return self._fresh(lambda: self.rng.choice(ONSETS) + self.rng.choice(CODAS))

    def person(self):
        return self._fresh(lambda: f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}")

    def thing(self, prefix_words):
        return self._fresh(
            lambda: (
                f"{self.rng.choice(prefix_words)} {self.rng.choice(ONSETS)}{self.rng.choice(CODAS)}"
            )
        )


def num(rng, lo, hi, step=1):
    return rng.randrange(lo, hi, step)


def fmt(n):
    return f"{n:,}"


def distinct(rng, make, count, avoid):
    """`count` values from `make()` that are pairwise distinct and not in `avoid`."""
    out = []
    while len(out) < count:
        v = make()
        if v not in out and v not in avoid:
            out.append(v)
    return out


# Each domain makes one question: (question, answer, answer doc, distractor docs). A doc is
# (title, snippet). Distractors come in three kinds so that every question has look-alikes.


def capital(rng, n):
    country = n.place()
    city, port, rival_city, other_city = n.place(), n.place(), n.place(), n.place()
    rival, neighbour = n.place(), n.place()
    people = fmt(num(rng, 12, 95) * 1000)
    return (
        f"What is the capital of {country}?",
        city,
        (f"{country}", f"The capital of {country} is {city}, a city of {people} people."),
        [
            (
                f"Ports of {country}",
                f"The largest port of {country} is {port}, on the eastern coast.",
            ),
            (f"{rival}", f"The capital of {rival} is {rival_city}, which lies on a river delta."),
            (
                f"{neighbour} today",
                f"{neighbour} moved its capital to {other_city} after the long drought.",
            ),
            (
                f"Travel in {country}",
                f"Trains in {country} run from the border to the old harbour twice a day.",
            ),
            (
                "Capitals of the region",
                f"Most capitals of the region, including those of {rival} and {neighbour}, are inland.",
            ),
        ],
    )


def founder(rng, n):
    company = n.thing(["Brimlock", "Halcyon", "Ostrel", "Vantor", "Kestrel"]) + " Robotics"
    person, ceo, other_founder = n.person(), n.person(), n.person()
    rival = n.thing(["Pellmar", "Corvane", "Tessaly"]) + " Robotics"
    year = num(rng, 1961, 2015)
    return (
        f"Who founded {company}?",
        person,
        (f"{company} history", f"{company} was founded by {person} in {year} in a rented garage."),
        [
            (f"{company} leadership", f"The current chief executive of {company} is {ceo}."),
            (f"{rival}", f"{rival} was founded by {other_founder}, a former ship engineer."),
            (
                f"{company} products",
                f"{company} sells warehouse robots and sorting arms to shipping firms.",
            ),
            (
                "Robotics startups",
                f"Robotics companies like {company} and {rival} grew quickly in the last decade.",
            ),
            (
                f"{company} offices",
                f"{company} opened its second office in {rng.choice(['a harbour town', 'an old mill', 'a former school'])}.",
            ),
        ],
    )


def population(rng, n):
    town = n.place()
    pop, old_pop, other_pop = distinct(rng, lambda: fmt(num(rng, 1200, 98000)), 3, [])
    other = n.place()
    return (
        f"How many people live in {town}?",
        pop,
        (f"{town} census", f"According to the latest census, {pop} people live in {town}."),
        [
            (
                f"{town} in the past",
                f"A century ago the town of {town} had about {old_pop} residents.",
            ),
            (
                f"{other} census",
                f"According to the same census, {other_pop} people live in {other}.",
            ),
            (f"{town} economy", f"Most people in {town} work in fishing or in the salt works."),
            (
                "Towns of the valley",
                f"{town} and {other} are the two largest towns of the valley.",
            ),
            (f"Counting {town}", f"Census takers in {town} visit every house on foot."),
        ],
    )


def bridge(rng, n):
    name = n.place()
    river, other_river = n.place(), n.place()
    y_open, y_planned, y_other = distinct(rng, lambda: str(num(rng, 1820, 2020)), 3, [])
    length = fmt(num(rng, 150, 2400))
    return (
        f"In what year did the {name} Bridge open?",
        y_open,
        (
            f"{name} Bridge",
            f"The {name} Bridge over the {river} River opened in {y_open} and is {length} metres long.",
        ),
        [
            (
                f"Plans for the {name} Bridge",
                f"Engineers first drew plans for the {name} Bridge in {y_planned}, but the money ran out.",
            ),
            (
                f"{other_river} crossings",
                f"The {other_river} Bridge opened in {y_other} after six years of work.",
            ),
            (
                f"{name} Bridge tolls",
                f"Cyclists cross the {name} Bridge for free; cars pay a small toll.",
            ),
            (
                f"Bridges of the {river}",
                f"Several bridges cross the {river} River between the two old towns.",
            ),
            (
                f"Repairs to the {name} Bridge",
                f"The {name} Bridge was closed for repairs after a winter flood.",
            ),
        ],
    )


def mountain(rng, n):
    peak = "Mount " + n.place()
    h, h2, h3 = distinct(rng, lambda: fmt(num(rng, 1800, 7900)), 3, [])
    other = "Mount " + n.place()
    range_ = n.place() + " Range"
    climber = n.person()
    return (
        f"How tall is {peak}?",
        f"{h} metres",
        (
            f"{peak}",
            f"{peak} rises {h} metres above sea level and is the highest point of the {range_}.",
        ),
        [
            (f"{other}", f"{other}, its neighbour in the {range_}, is {h2} metres tall."),
            (
                f"Climbing {peak}",
                f"{climber} made the first recorded climb of {peak} by its north ridge.",
            ),
            (f"{range_} passes", f"The highest road pass of the {range_} reaches {h3} metres."),
            (f"Weather on {peak}", f"Snow covers the summit of {peak} for most of the year."),
            (
                f"Measuring {peak}",
                f"Surveyors measured {peak} again with satellites and found it had not changed.",
            ),
        ],
    )


def price(rng, n):
    product = n.thing(["Lumen", "Aster", "Nimbus", "Vortex", "Pico"]) + " blender"
    p, p2, p3 = distinct(rng, lambda: f"${num(rng, 29, 890)}", 3, [])
    other = n.thing(["Lumen", "Aster", "Nimbus", "Vortex", "Pico"]) + " blender"
    maker = n.place() + " Appliances"
    return (
        f"How much does the {product} cost?",
        p,
        (f"{product} price list", f"The {product} costs {p} and comes with a two-year warranty."),
        [
            (f"{other}", f"The {other}, the larger model from {maker}, costs {p2}."),
            (f"{product} accessories", f"A spare jug for the {product} costs {p3} in most shops."),
            (f"{product} review", f"Reviewers liked how quietly the {product} crushes ice."),
            (f"{maker}", f"{maker} makes every blender it sells in one factory."),
            (f"{product} colours", f"The {product} comes in red, black and silver."),
        ],
    )


def inventor(rng, n):
    device = n.thing(["Glimmer", "Tessel", "Quiver", "Harrow"]) + " loom"
    person, improver, other_person = n.person(), n.person(), n.person()
    other_device = n.thing(["Spindle", "Rattle", "Copper"]) + " press"
    return (
        f"Who invented the {device}?",
        person,
        (f"{device}", f"The {device} was invented by {person}, a weaver who wanted faster cloth."),
        [
            (f"Improving the {device}", f"Later, {improver} added a second pedal to the {device}."),
            (
                f"{other_device}",
                f"The {other_device} was invented by {other_person} in the same workshop district.",
            ),
            (f"{device} today", f"A working {device} is on show in the textile museum."),
            (
                f"How the {device} works",
                f"The {device} lifts every second thread with a wooden comb.",
            ),
            ("Looms of the guild", f"The weavers' guild kept a {device} in each of its halls."),
        ],
    )


def dish(rng, n):
    name = n.place().lower() + " stew"
    ingredients = [
        "smoked eel",
        "yellow lentils",
        "roasted chestnuts",
        "goat cheese",
        "black barley",
        "pickled plums",
        "sweet fennel",
        "river crab",
        "wild garlic",
        "salted duck",
    ]
    main, side, other_main = rng.sample(ingredients, 3)
    region = n.place()
    other = n.place().lower() + " stew"
    return (
        f"What is the main ingredient of {name}?",
        main,
        (
            f"Recipes from {region}",
            f"The main ingredient of {name} is {main}, simmered for a whole night.",
        ),
        [
            (f"Serving {name}", f"In {region}, {name} is served with a side of {side}."),
            (f"{other}", f"The main ingredient of {other} is {other_main}."),
            (
                f"Festivals of {region}",
                f"Every village of {region} cooks a stew for the harvest festival.",
            ),
            (
                f"History of {name}",
                f"Sailors brought the first recipes for {name} home from the islands.",
            ),
            (
                f"Cooking {name}",
                f"Cooks stir {name} with a long wooden spoon and add salt at the end.",
            ),
        ],
    )


def novel(rng, n):
    title = (
        "The " + n.place() + " " + rng.choice(["Lantern", "Orchard", "Tide", "Archive", "Crown"])
    )
    author, translator, other_author = n.person(), n.person(), n.person()
    other_title = "The " + n.place() + " " + rng.choice(["Harbour", "Mirror", "Feather"])
    return (
        f"Who wrote the novel {title}?",
        author,
        (
            f"{title}",
            f"{title} is a novel written by {author} about a family of lighthouse keepers.",
        ),
        [
            (f"{title} in translation", f"{translator} translated {title} into four languages."),
            (
                f"{other_title}",
                f"{other_title}, a novel written by {other_author}, is often compared with {title}.",
            ),
            (
                f"{title} on stage",
                f"A stage version of {title} ran for two seasons in the capital.",
            ),
            (
                "Prize winners",
                f"{title} and {other_title} were both shortlisted for the Coastline Prize.",
            ),
            (
                f"Reading {title}",
                f"Readers of {title} often visit the lighthouse the book describes.",
            ),
        ],
    )


def spacecraft(rng, n):
    craft = n.place() + "-" + str(num(rng, 2, 9))
    y, y2, y3 = distinct(rng, lambda: str(num(rng, 1990, 2040)), 3, [])
    other = n.place() + "-" + str(num(rng, 2, 9))
    agency = n.place() + " Space Agency"
    return (
        f"In what year was the {craft} probe launched?",
        y,
        (f"{craft} mission", f"The {craft} probe was launched in {y} by the {agency}."),
        [
            (f"{craft} arrival", f"The {craft} probe reached the outer moons in {y2}."),
            (
                f"{other} mission",
                f"The {other} probe was launched in {y3} and lost contact a year later.",
            ),
            (f"{agency}", f"The {agency} builds its probes in a hangar by the sea."),
            (f"{craft} instruments", f"The {craft} probe carries two cameras and a dust counter."),
            (
                f"Building the {craft}",
                f"Engineers tested the {craft} probe in a vacuum chamber for months.",
            ),
        ],
    )


def bird(rng, n):
    bird_ = n.place().lower() + " warbler"
    colours = [
        "copper-orange",
        "slate blue",
        "lemon yellow",
        "ash grey",
        "emerald green",
        "plum purple",
        "rust red",
        "cream white",
    ]
    c, c2, c3 = rng.sample(colours, 3)
    other = n.place().lower() + " warbler"
    isle = n.place()
    return (
        f"What colour is the {bird_}?",
        c,
        (f"{bird_}", f"The {bird_} is a small {c} bird that nests in reeds."),
        [
            (f"{other}", f"The {other} is a small {c2} bird of the high forests."),
            (f"{bird_} eggs", f"The {bird_} lays {c3} eggs in early spring."),
            (
                f"Birds of {isle}",
                f"Both the {bird_} and the {other} can be seen on {isle} in summer.",
            ),
            (f"{bird_} song", f"The song of the {bird_} is a fast, rising whistle."),
            (
                f"Counting the {bird_}",
                f"Volunteers count the {bird_} every autumn along the coast.",
            ),
        ],
    )


def phone(rng, n):
    model = n.thing(["Orbi", "Kite", "Nova", "Tern"]) + " " + str(num(rng, 3, 12))
    hours, hours2, hours3 = distinct(rng, lambda: str(num(rng, 11, 60)), 3, [])
    other = n.thing(["Orbi", "Kite", "Nova", "Tern"]) + " " + str(num(rng, 3, 12))
    return (
        f"How long does the battery of the {model} phone last?",
        f"{hours} hours",
        (
            f"{model} specifications",
            f"The battery of the {model} phone lasts {hours} hours of video playback.",
        ),
        [
            (
                f"{other} specifications",
                f"The battery of the {other} phone lasts {hours2} hours of video playback.",
            ),
            (
                f"{model} charging",
                f"The {model} charges fully in {hours3} minutes with its own charger.",
            ),
            (f"{model} review", f"Reviewers praised the bright screen of the {model} phone."),
            (
                "Phone batteries",
                f"Battery life of phones like the {model} depends on screen brightness.",
            ),
            (f"{model} colours", f"The {model} phone comes in sand, graphite and teal."),
        ],
    )


def moons(rng, n):
    planet = n.place()
    m, m2, m3 = distinct(rng, lambda: str(num(rng, 2, 40)), 3, [])
    other = n.place()
    star = n.place()
    return (
        f"How many moons does the planet {planet} have?",
        f"{m} moons",
        (
            f"{planet}",
            f"The planet {planet} has {m} moons, the largest of which is covered in ice.",
        ),
        [
            (f"{other}", f"The planet {other}, also orbiting {star}, has {m2} moons."),
            (f"Rings of {planet}", f"{planet} has {m3} faint rings made of dust."),
            (f"The {star} system", f"{planet} is the third planet from the star {star}."),
            (f"Observing {planet}", f"Small telescopes show {planet} as a pale green disc."),
            (
                f"Moons of {star}",
                f"Astronomers still argue about how many moons orbit the planets of {star}.",
            ),
        ],
    )


def coach(rng, n):
    team = n.place() + " " + rng.choice(["Falcons", "Otters", "Comets", "Herons"])
    person, captain, other_coach = n.person(), n.person(), n.person()
    other = n.place() + " " + rng.choice(["Wolves", "Badgers", "Pilots"])
    return (
        f"Who coaches the {team}?",
        person,
        (
            f"{team} staff",
            f"The {team} are coached by {person}, who joined the club three seasons ago.",
        ),
        [
            (f"{team} captain", f"The captain of the {team} is {captain}, a veteran defender."),
            (f"{other}", f"The {other} are coached by {other_coach}."),
            (f"{team} stadium", f"The {team} play their home games by the old canal."),
            ("League table", f"The {team} finished one point ahead of the {other} last season."),
            (f"{team} training", f"The {team} train on a field behind the fire station."),
        ],
    )


def compound(rng, n):
    name = n.place().lower() + "ite"
    bp, mp, bp2 = distinct(rng, lambda: str(num(rng, 40, 390)), 3, [])
    other = n.place().lower() + "ite"
    lab = n.place() + " Institute"
    return (
        f"What is the boiling point of {name}?",
        f"{bp} degrees Celsius",
        (f"{name} properties", f"{name} boils at {bp} degrees Celsius and smells faintly of pine."),
        [
            (f"{name} melting", f"{name} melts at {mp} degrees Celsius into a clear liquid."),
            (f"{other} properties", f"{other}, a related solvent, boils at {bp2} degrees Celsius."),
            (f"Discovery of {name}", f"{name} was first made at the {lab} as a cleaning agent."),
            (f"Storing {name}", f"{name} must be stored in dark glass bottles away from heat."),
            (f"{lab}", f"The {lab} studies solvents such as {name} and {other}."),
        ],
    )


def festival(rng, n):
    fest = n.place() + " Lantern Festival"
    # Not "May" or "March": as English words they would match replies that do not name a month.
    months = [
        "January",
        "February",
        "April",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ]
    mo, mo2, mo3 = rng.sample(months, 3)
    other = n.place() + " Kite Festival"
    town = n.place()
    return (
        f"In which month is the {fest} held?",
        mo,
        (f"{fest}", f"The {fest} is held every {mo} on the hills above {town}."),
        [
            (f"{other}", f"The {other} is held every {mo2} on the same hills."),
            (
                f"Planning the {fest}",
                f"Volunteers start building lanterns for the {fest} in {mo3}.",
            ),
            (f"{town}", f"{town} is a market town known for its festivals and its lanterns."),
            (f"{fest} food", f"Visitors to the {fest} eat honey cakes and roasted corn."),
            (f"Getting to the {fest}", f"Extra buses run from {town} station during the {fest}."),
        ],
    )


DOMAINS = [
    capital,
    founder,
    population,
    bridge,
    mountain,
    price,
    inventor,
    dish,
    novel,
    spacecraft,
    bird,
    phone,
    moons,
    coach,
    compound,
    festival,
]
PER_DOMAIN = 3

# The issue's own example, kept word for word as question 1.
ZORBLATT = (
    "What is the capital of Zorblatt?",
    "Quenmoor",
    ("Zorblatt", "The capital of Zorblatt is Quenmoor, a city of 40,000 people."),
    [
        ("Ports of Zorblatt", "The largest port of Zorblatt is Dravik, on the eastern coast."),
        ("Velmora", "The capital of Velmora is Tarnwen, which lies on a river delta."),
        (
            "Travel in Zorblatt",
            "Trains in Zorblatt run from the border to the old harbour twice a day.",
        ),
    ],
)


def upper_first(text):
    return text[:1].upper() + text[1:]


def build():
    rng = random.Random(SEED)
    names = Names(rng)
    names.used.update({"Zorblatt", "Quenmoor", "Dravik", "Velmora", "Tarnwen"})
    raw = [ZORBLATT]
    for _ in range(PER_DOMAIN):
        for domain in DOMAINS:
            raw.append(domain(rng, names))
    entries, used_ids = [], set()
    for i, (question, answer, answer_doc, distractors) in enumerate(raw, start=1):
        if i == 1:
            chosen = distractors
        else:
            k = rng.randint(2, min(5, len(distractors)))  # 3-6 documents in all
            chosen = rng.sample(distractors, k)
        docs = [answer_doc, *chosen]
        order = list(range(len(docs)))
        rng.shuffle(order)
        ids = []
        for _ in docs:
            while True:
                doc_id = f"kb-{rng.randrange(16**4):04x}"
                if doc_id not in used_ids:
                    used_ids.add(doc_id)
                    ids.append(doc_id)
                    break
        documents = [
            {
                "id": ids[j],
                "data": {"title": upper_first(docs[j][0]), "snippet": upper_first(docs[j][1])},
            }
            for j in order
        ]
        entry = {
            "id": f"g{i:02d}",
            "question": question,
            "documents": documents,
            "answer_doc": ids[0],
            "answer": answer,
        }
        check(entry)
        entries.append(entry)
    return entries


def check(entry):
    docs = entry["documents"]
    assert 3 <= len(docs) <= 6, entry["id"]
    assert len({d["id"] for d in docs}) == len(docs), entry["id"]
    answer = entry["answer"].lower()
    holders = [d["id"] for d in docs if answer in d["data"]["snippet"].lower()]
    assert holders == [entry["answer_doc"]], (entry["id"], holders)
    answer_doc = next(d for d in docs if d["id"] == entry["answer_doc"])
    assert entry["answer"] in answer_doc["data"]["snippet"], entry["id"]  # verbatim
    for d in docs:
        assert answer not in d["data"]["title"].lower(), (entry["id"], d)
        sentences = d["data"]["snippet"].count(". ") + 1
        assert sentences <= 3, (entry["id"], d)


def render(entries):
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "questions.jsonl"))
    parser.add_argument("--check", action="store_true", help="fail if the file on disk differs")
    args = parser.parse_args()
    text = render(build())
    out = pathlib.Path(args.out)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            sys.exit(f"{out} is not what make_questions.py writes: rerun it")
        print(f"{out}: up to date")
        return
    out.write_text(text)
    print(f"wrote {text.count(chr(10))} questions to {out}")


if __name__ == "__main__":
    main()
