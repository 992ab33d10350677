"""Constructor checks shared by the Keras 3 and the Keras 2 (legacy) optimizers, with Keras's
wording."""


def require_non_negative(name, value):
    if value < 0.0:
        raise ValueError(f"`{name}` needs to be positive or zero. Received: {name}={value}.")


def check_ftrl_arguments(learning_rate_power, initial_accumulator_value,
                         l1_regularization_strength, l2_regularization_strength,
                         l2_shrinkage_regularization_strength):
    require_non_negative("initial_accumulator_value", initial_accumulator_value)
    if learning_rate_power > 0.0:
        raise ValueError(
            "`learning_rate_power` needs to be negative or zero. Received: "
            f"learning_rate_power={learning_rate_power}.")
    require_non_negative("l1_regularization_strength", l1_regularization_strength)
    require_non_negative("l2_regularization_strength", l2_regularization_strength)
    require_non_negative("l2_shrinkage_regularization_strength",
                         l2_shrinkage_regularization_strength)
