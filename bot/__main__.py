from bot.launcher import run

run()
