"""The batch command as a Spark application, for spark-submit:

    spark-submit --master spark://HOST:7077 scripts/spark_batch.py INPUT... --out DIR

takes the arguments of `python -m emotion batch` and runs its Spark engine in the session
spark-submit starts (its --master and --conf settings apply). The executors get the emotion
package and the model file from the driver; they need requirements.txt installed.
"""

import sys

from emotion.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["batch", *sys.argv[1:], "--engine", "spark"]))
