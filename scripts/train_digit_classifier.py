"""Train the Stacked Digits classifier on one thread and write the file that ships with igm,
igm_cli/assets/digit_classifier.pt (its weights, held-out accuracy and the hash of the data it
was made from). Run it only when DigitClassifier, its training or CLASSIFIER_VERSION changes:
every Stacked Digits number in the README was measured with the shipped file, and another
training run gives other weights on another CPU.

    python scripts/train_digit_classifier.py [--out PATH]
"""

from __future__ import annotations

import argparse

from igm_cli.metrics.digits import SHIPPED, write_shipped_classifier


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(SHIPPED), help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    record = write_shipped_classifier(args.out)
    print(f"wrote {args.out}: held-out accuracy {record['heldout_accuracy']:.4f} "
          f"(297 digits), trained in {record['train_seconds']:.1f} s, data key {record['key']}")


if __name__ == "__main__":
    main()
