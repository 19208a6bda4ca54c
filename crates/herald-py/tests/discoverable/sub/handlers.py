from herald import StepHandler, StepHandlerResult


class Doubler(StepHandler):
    handler_name = "doubler"

    def call(self, context):
        return StepHandlerResult.success({"n": context.input_data["n"] * 2})


class Unnamed(StepHandler):
    def call(self, context):
        return StepHandlerResult.success({})
