from emotion.training.train import main

main()
