"""Word lists the catalogue draws questions, events and tags from.

Broad on purpose: the backend's text search and category filters need questions that differ in
more than a number, so each topic mixes several templates with several lists of names.
"""

from __future__ import annotations

# (id, label, slug): real Gamma tag ids where known, so tag filters look familiar.
TAGS: dict[str, tuple[int, str, str]] = {
    "Politics": (2, "Politics", "politics"),
    "Elections": (144, "Elections", "elections"),
    "World": (101970, "World", "world"),
    "Geopolitics": (100265, "Geopolitics", "geopolitics"),
    "Crypto": (21, "Crypto", "crypto"),
    "Crypto Prices": (1312, "Crypto Prices", "crypto-prices"),
    "Sports": (1, "Sports", "sports"),
    "Games": (100639, "Games", "games"),
    "Economy": (100328, "Economy", "economy"),
    "Fed Rates": (100196, "Fed Rates", "fed-rates"),
    "Tech": (1401, "Tech", "tech"),
    "AI": (439, "AI", "ai"),
    "Pop Culture": (596, "Pop Culture", "pop-culture"),
    "Movies": (53, "Movies", "movies"),
    "Music": (100159, "Music", "music"),
    "Science": (74, "Science", "science"),
    "Weather": (84, "Weather", "weather"),
    "Business": (107, "Business", "business"),
}

FIRST_NAMES = (
    "James", "Maria", "Ahmed", "Sofia", "Liam", "Chen", "Olga", "Rahul", "Fatima", "Lucas", "Amara",
    "Diego", "Yuki", "Hannah", "Mateo", "Ingrid", "Kwame", "Elena", "Omar", "Priya", "Noah", "Aisha",
    "Pavel", "Camila", "Jonas", "Leila", "Tomas", "Mei", "Kofi", "Isabel", "Viktor", "Nadia", "Samuel",
    "Rosa", "Arjun", "Clara", "Hugo", "Zara", "Felix", "Lucia", "Marco", "Ayla", "Dmitri", "Grace",
    "Rafael", "Yasmin", "Erik", "Ana", "Bruno", "Keiko", "Tariq",
)
LAST_NAMES = (
    "Smith", "Garcia", "Okafor", "Novak", "Tanaka", "Silva", "Kowalski", "Haddad", "Mbeki", "Rossi",
    "Larsen", "Fischer", "Moreau", "Petrov", "Nakamura", "Santos", "Dubois", "Jensen", "Alvarez", "Kimura",
    "Mensah", "Costa", "Weber", "Lindqvist", "Haas", "Romero", "Ivanova", "Castillo", "Bauer", "Osei",
    "Marino", "Schulz", "Varga", "Duarte", "Keller", "Sato", "Almeida", "Horvat", "Brennan", "Abara",
    "Quinn", "Whitfield", "Delgado", "Yilmaz", "Reyes", "Eriksen", "Adeyemi", "Morales", "Lambert",
    "Ferreira", "Kovacs", "Navarro", "Sokolov",
)

COUNTRIES = (
    "United States", "Canada", "Mexico", "Brazil", "Argentina", "Chile", "Colombia", "Peru",
    "United Kingdom", "France", "Germany", "Italy", "Spain", "Portugal", "Netherlands", "Belgium",
    "Poland", "Sweden", "Norway", "Denmark", "Finland", "Ireland", "Austria", "Czechia", "Hungary",
    "Romania", "Greece", "Turkey", "Israel", "Egypt", "Nigeria", "Kenya", "Ethiopia", "South Africa",
    "Ghana", "India", "Pakistan", "Bangladesh", "Japan", "South Korea", "Taiwan", "Indonesia",
    "Philippines", "Vietnam", "Thailand", "Australia", "New Zealand", "Ukraine", "Georgia",
)
OFFICES = ("President", "Prime Minister", "Chancellor", "Speaker of the House", "Foreign Minister")
ELECTION_KINDS = ("presidential", "parliamentary", "general", "snap", "regional", "mayoral")
PARTIES = (
    "Labour", "Conservatives", "Social Democrats", "Greens", "Liberal Democrats", "Christian Democrats",
    "Centre Party", "People's Party", "Reform Party", "Democrats", "Republicans", "National Front",
    "Progress Party", "Left Alliance",
)
CITIES = (
    "New York", "London", "Paris", "Tokyo", "Chicago", "Los Angeles", "Berlin", "Madrid", "Toronto",
    "Sydney", "Seoul", "Mumbai", "Sao Paulo", "Mexico City", "Istanbul", "Lagos", "Cairo", "Moscow",
    "Rome", "Amsterdam", "Denver", "Seattle", "Miami", "Boston", "Dallas", "Houston",
)

COINS = (
    ("Bitcoin", "BTC", 100_000), ("Ethereum", "ETH", 4_000), ("Solana", "SOL", 200), ("XRP", "XRP", 3),
    ("Dogecoin", "DOGE", 0.4), ("Cardano", "ADA", 1), ("Chainlink", "LINK", 25), ("Avalanche", "AVAX", 40),
    ("Polkadot", "DOT", 8), ("Litecoin", "LTC", 120), ("Toncoin", "TON", 6), ("Sui", "SUI", 4),
    ("Pepe", "PEPE", 0.00002), ("Hyperliquid", "HYPE", 40), ("BNB", "BNB", 700),
)
CRYPTO_EVENTS = (
    "{coin} ETF approved by {date}?", "{coin} all-time high by {date}?", "Will {coin} flip {coin2} by {date}?",
    "Will Tether remain pegged through {month}?", "Will a {coin} treasury company buy more in {month}?",
    "Will {coin} be listed on Robinhood by {date}?", "{coin} network outage before {date}?",
)

LEAGUES: dict[str, tuple[str, ...]] = {
    "NBA": (
        "Lakers", "Celtics", "Warriors", "Bucks", "Nuggets", "Heat", "Knicks", "Suns", "Mavericks",
        "76ers", "Thunder", "Cavaliers", "Kings", "Pacers", "Grizzlies", "Timberwolves", "Rockets",
        "Magic", "Hawks", "Bulls",
    ),
    "NFL": (
        "Chiefs", "Eagles", "49ers", "Bills", "Ravens", "Cowboys", "Lions", "Packers", "Dolphins",
        "Bengals", "Jets", "Steelers", "Chargers", "Vikings", "Texans", "Rams", "Seahawks", "Browns",
        "Broncos", "Saints",
    ),
    "EPL": (
        "Arsenal", "Liverpool", "Manchester City", "Chelsea", "Tottenham", "Newcastle", "Aston Villa",
        "Manchester United", "Brighton", "West Ham", "Fulham", "Brentford", "Everton", "Crystal Palace",
        "Wolves", "Bournemouth",
    ),
    "MLB": (
        "Yankees", "Dodgers", "Braves", "Astros", "Phillies", "Orioles", "Rangers", "Mariners", "Padres",
        "Cubs", "Mets", "Guardians", "Twins", "Rays", "Brewers", "Giants",
    ),
    "NHL": (
        "Oilers", "Panthers", "Rangers", "Stars", "Avalanche", "Bruins", "Hurricanes", "Jets", "Canucks",
        "Golden Knights", "Maple Leafs", "Lightning", "Kings", "Predators",
    ),
}
TOURNAMENTS = ("Wimbledon", "US Open", "Roland Garros", "Australian Open", "Indian Wells", "Miami Open",
               "Madrid Open", "Italian Open", "Cincinnati Open", "National Bank Open")
SPORT_PROPS = (
    "Will {team} win the {year} {league} Championship?", "Will {team} make the {year} {league} playoffs?",
    "Will {player} be named {year} {league} MVP?", "Will {team} fire their head coach before {date}?",
    "Will {player} sign with {team} before {date}?",
)

FED_ACTIONS = ("cut", "raise", "pause")
ECON = (
    "Will US inflation exceed {pct}% in {month}?", "Will {country} enter a recession in {year}?",
    "Will the Fed {action} interest rates in {month} {year}?", "Will US unemployment reach {pct}% by {date}?",
    "Will the S&P 500 close above {index} on {date}?", "Will gold hit ${gold} by {date}?",
    "Will oil (WTI) trade above ${oil} by {date}?", "Will {country} GDP growth beat {pct}% in {year}?",
    "Will the ECB {action} rates in {month} {year}?", "Will US GDP growth be negative in Q{q} {year}?",
)

COMPANIES = (
    "Apple", "Tesla", "Nvidia", "Microsoft", "Google", "Amazon", "Meta", "OpenAI", "Anthropic", "SpaceX",
    "Netflix", "Samsung", "Intel", "AMD", "TikTok", "xAI", "Mistral", "Stripe", "Databricks", "Reddit",
)
PRODUCTS = ("GPT-6", "a foldable iPhone", "Full Self-Driving v14", "a humanoid robot", "Gemini 4", "AR glasses",
            "a new flagship model", "Starship orbital refuelling", "a $25k car", "Claude 6")
TECH = (
    "Will {company} release {product} by {date}?", "Will {company} market cap exceed ${cap}T by {date}?",
    "Will {company} IPO before {date}?", "Will {company} announce layoffs in {month}?",
    "Will {company} be the largest company in the world on {date}?",
    "Will {company} stock close above ${price} on {date}?",
)

MOVIES = (
    "Dune: Part Three", "Avatar: Fire and Ash", "The Batman Part II", "Shrek 5", "Toy Story 5",
    "Spider-Man: Brand New Day", "The Odyssey", "Avengers: Doomsday", "Frozen III", "Minecraft 2",
    "Project Hail Mary", "Zootopia 2",
)
ARTISTS = (
    "Taylor Swift", "Drake", "Beyonce", "Bad Bunny", "Kendrick Lamar", "Rihanna", "The Weeknd",
    "Billie Eilish", "Adele", "Ed Sheeran", "Dua Lipa", "Travis Scott", "SZA", "Olivia Rodrigo",
    "Sabrina Carpenter",
)
CULTURE = (
    "Will {movie} gross over ${gross}M on its opening weekend?", "Will {artist} release a new album before {date}?",
    "Will {artist} headline the Super Bowl halftime show in {year}?", "Will {artist} win Album of the Year?",
    "Will {movie} have a Rotten Tomatoes score above {pct0}%?", "Will {artist} announce a world tour by {date}?",
    "Will {person} get engaged before {date}?",
)
SCIENCE = (
    "Will a magnitude {mag}+ earthquake hit {country} by {date}?", "Will NASA launch Artemis III by {date}?",
    "Will {city} record over {snow} inches of snow in {month}?", "Will {year} be the hottest year on record?",
    "Will a hurricane make landfall in {country} before {date}?", "Will WHO declare a new pandemic by {date}?",
    "Will the highest temperature in {city} exceed {temp}F on {date}?",
)
WORLD = (
    "Will {country} and {country2} sign a ceasefire by {date}?", "Will {country} join NATO before {date}?",
    "{person} out as {office} of {country} by {date}?", "Will {country} hold a referendum in {year}?",
    "Will the US impose new tariffs on {country} by {date}?", "Will {country} recognise Palestine by {date}?",
    "Will {person} meet {person2} before {date}?", "Will {country} leave the EU customs union by {date}?",
)
POLITICS = (
    "Will {person} win the {year} {country} {kind} election?", "Will {party} win the most seats in {country}?",
    "Will {person} be the next {office} of {country}?", "Will {person} run for {office} in {year}?",
    "Will {person} be impeached before {date}?", "Will {country} call a snap election before {date}?",
    "Will {person} approval rating be above {pct0}% on {date}?", "Will {person} win the {city} mayoral race?",
)
# Multi-outcome events become neg-risk groups of Yes/No markets, one per candidate, as on Polymarket.
GROUP_EVENTS = (
    ("Politics", "Who will win the {year} {country} {kind} election?",
     "Will {item} win the {year} {country} {kind} election?", "person"),
    ("Politics", "Next {office} of {country}?", "Will {item} be the next {office} of {country}?", "person"),
    ("Economy", "Fed decision in {month} {year}?", "Will the Fed {item} after the {month} {year} meeting?",
     "fed"),
    ("Crypto", "{coin} price on {date}?", "Will the price of {coin} be {item} on {date}?", "range"),
    ("Sports", "{year} {league} Champion", "Will {item} win the {year} {league} Championship?", "team"),
    ("Pop Culture", "Album of the Year {year}", "Will {item} win Album of the Year at the {year} Grammys?",
     "artist"),
    ("Weather", "Highest temperature in {city} on {date}?",
     "Will the highest temperature in {city} be {item} on {date}?", "temp"),
)
FED_OUTCOMES = ("cut rates by 50+ bps", "cut rates by 25 bps", "hold rates", "raise rates by 25+ bps")
