from bmxgc.cli import run

run()
